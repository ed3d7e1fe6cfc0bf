package emporix

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
)

// minorUnits converts a JSON number in major units (Emporix's prices:
// 294.118, 350, 1e2) to an integer number of units with digits decimal
// places, rounding half away from zero, without going through floating
// point. An empty number is 0, false.
func minorUnits(n json.Number, digits int) (int64, bool, error) {
	s := strings.TrimSpace(string(n))
	if s == "" {
		return 0, false, nil
	}
	neg := false
	if s[0] == '-' {
		neg, s = true, s[1:]
	}
	mant, exp := s, 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		mant = s[:i]
		var e int
		if _, err := fmt.Sscanf(s[i+1:], "%d", &e); err != nil || e > 30 || e < -30 {
			return 0, false, fmt.Errorf("%q is not a number within bounds", n)
		}
		exp = e
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	if intPart == "" && frac == "" {
		return 0, false, fmt.Errorf("%q is not a number", n)
	}
	digitsStr := intPart + frac
	for _, c := range digitsStr {
		if c < '0' || c > '9' {
			return 0, false, fmt.Errorf("%q is not a number", n)
		}
	}
	// value = digitsStr × 10^(exp - len(frac)); we want value × 10^digits.
	shift := exp - len(frac) + digits
	digitsStr = strings.TrimLeft(digitsStr, "0")
	if digitsStr == "" {
		return 0, true, nil
	}
	var v int64
	roundUp := false
	if shift >= 0 {
		digitsStr += strings.Repeat("0", shift)
	} else {
		cut := len(digitsStr) + shift // digits kept
		if cut < 0 {
			return 0, true, nil
		}
		roundUp = cut < len(digitsStr) && digitsStr[cut] >= '5'
		digitsStr = digitsStr[:cut]
	}
	if len(digitsStr) > 18 {
		return 0, false, fmt.Errorf("%q is too large", n)
	}
	for _, c := range digitsStr {
		v = v*10 + int64(c-'0')
	}
	if roundUp {
		if v == math.MaxInt64 {
			return 0, false, fmt.Errorf("%q is too large", n)
		}
		v++
	}
	if neg {
		v = -v
	}
	return v, true, nil
}
