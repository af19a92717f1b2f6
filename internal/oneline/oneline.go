// Package oneline keeps operator-facing messages (readiness lines, folder
// problems) on one line, so a cause that spans several lines — a PEM
// parse error, a wrapped exec error — cannot break a line-oriented reader.
package oneline

import "strings"

// Of collapses every run of white space in s, newlines included, into one
// space and trims both ends.
func Of(s string) string { return strings.Join(strings.Fields(s), " ") }
