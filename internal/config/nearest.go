package config

import (
	"strings"
)

// Nearest is the key of known closest to key by edit distance, when it is
// close enough to be the one meant; "" when none is. helper.conf keys and
// flags use it too, so every unknown name gets the same hint.
func Nearest(key string, known []string) string {
	best, bestDist := "", -1
	for _, k := range known {
		if d := editDistance(strings.ToLower(key), strings.ToLower(k)); bestDist < 0 || d < bestDist {
			best, bestDist = k, d
		}
	}
	// Two edits, or a third of the name for long ones; never a name that
	// shares almost nothing with it.
	if bestDist < 0 || bestDist >= len(key) || bestDist > max(2, len(key)/3) {
		return ""
	}
	return best
}

// DidYouMean is "; did you mean "x"?" for the nearest of known to key, or
// "".
func DidYouMean(key string, known []string) string {
	if n := Nearest(key, known); n != "" {
		return `; did you mean "` + n + `"?`
	}
	return ""
}

// editDistance is the Levenshtein distance, by bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
