package kernel

import (
	"bufio"
	"bytes"
	"fmt"
	"regexp"
	"strings"
)

// Option is one CONFIG_X=value line of a config fragment.
type Option struct {
	Name  string // with the CONFIG_ prefix, as kconfig writes it
	Value string // y, n, m, a number or a double-quoted string, as written
	Line  int    // 1-based line number in the fragment
}

var (
	optionRE = regexp.MustCompile(`^(CONFIG_[A-Za-z0-9_]+)=(.*)$`)
	valueRE  = regexp.MustCompile(`^(y|n|m|-?[0-9]+|0x[0-9a-fA-F]+|"([^"\\]|\\.)*")$`)
	// kconfig reads "# CONFIG_X is not set" as X=n, but build.sh's check and a reader
	// skimming the comments would not; the fragment spells it CONFIG_X=n instead.
	notSetRE = regexp.MustCompile(`^#\s*(CONFIG_[A-Za-z0-9_]+) is not set\s*$`)
)

// ParseFragment parses a kconfig fragment in the subset boxd uses: blank lines,
// '#' comments and CONFIG_X=value lines, each option at most once.
func ParseFragment(data []byte) ([]Option, error) {
	var opts []Option
	seen := make(map[string]int)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if m := notSetRE.FindStringSubmatch(line); m != nil {
			return nil, fmt.Errorf("line %d: write %s=n instead of %q", n, m[1], line)
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := optionRE.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("line %d: %q is not CONFIG_X=value", n, line)
		}
		name, value := m[1], m[2]
		if !valueRE.MatchString(value) {
			return nil, fmt.Errorf("line %d: %s has value %q, want y, n, m, a number or a quoted string", n, name, value)
		}
		if prev, dup := seen[name]; dup {
			return nil, fmt.Errorf("line %d: %s already set on line %d", n, name, prev)
		}
		seen[name] = n
		opts = append(opts, Option{Name: name, Value: value, Line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read fragment: %w", err)
	}
	return opts, nil
}
