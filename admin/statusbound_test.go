package admin

import (
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// TestStatusIsBoundedAndEscapesWhatClientsChose: SDS clients that send
// node ids and NACK details of 300 KB full of escape sequences and
// newlines, on more streams than /status lists, get a /status document
// under 1 MiB that lists the oldest MaxListedClients streams
// and counts the others; no string in it, and no line of `sds-bridge
// status`'s text, carries a control character a terminal would act on.
// Before, 100 such streams of 960 KB made a 288 MB document.
func TestStatusIsBoundedAndEscapesWhatClientsChose(t *testing.T) {
	b := startBridge(t, bridgeOptions{})
	b.push(time.Hour)
	b.waitSinks(1, nil)
	const streams = MaxListedClients + 10
	forged := strings.Repeat("\x1b[31mlevel=ERROR msg=forged\n\u202e", 300<<10/30)
	for range streams {
		c := newSotWClient(t, b.sdsPath, forged)
		c.answer(forged)
	}
	testkit.Eventually(t, "every NACK taken", func() bool { return b.sds.Stats().NACKs == streams })

	code, body := testkit.Get(t, b.url+"/status")
	if code != http.StatusOK {
		t.Fatalf("/status = %d", code)
	}
	t.Logf("/status is %d bytes with %d streams that sent %d KB each", len(body), streams, 2*len(forged)>>10)
	if len(body) > 1<<20 {
		t.Errorf("/status is %d bytes, want at most 1 MiB", len(body))
	}
	st := b.status()
	if got := len(st.SDS.Clients); got != MaxListedClients || st.SDS.ClientsNotListed != streams-MaxListedClients {
		t.Errorf("%d clients listed, %d not listed; want %d and %d", got, st.SDS.ClientsNotListed, MaxListedClients, streams-MaxListedClients)
	}
	for _, c := range st.SDS.Clients {
		for what, s := range map[string]string{"node": c.Node, "NACK": c.NACK} {
			if i := strings.IndexFunc(s, func(r rune) bool { return r != ' ' && !unicode.IsPrint(r) }); i >= 0 {
				t.Fatalf("%s in /status holds %q at %d", what, s[i], i)
			}
			if !strings.HasPrefix(s, `\x1b[31mlevel=ERROR msg=forged\n\u202e`) {
				t.Fatalf("%s in /status is not the client's text escaped: %.80q", what, s)
			}
		}
	}
	var text strings.Builder
	if err := st.WriteText(&text, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(text.String(), "\n") {
		if strings.HasPrefix(line, "level=ERROR") || strings.ContainsAny(line, "\x1b\r\u202e") {
			t.Fatalf("status text line carries the client's control characters: %.120q", line)
		}
	}
	if !strings.Contains(text.String(), "… and 10 more streams not listed") {
		t.Errorf("the text does not count the streams not listed:\n%.2000s", text.String())
	}
}
