package cmdline

import "strings"

// Arg is one kernel command-line parameter.
type Arg struct {
	Key      string
	Value    string
	HasValue bool // "key=" has an empty value; "key" has none
}

// Split tokenizes a command line as the kernel's next_arg (lib/cmdline.c)
// does: parameters are separated by whitespace outside double quotes, the
// first '=' separates key from value, and a value (or a whole parameter)
// wrapped in double quotes loses them. Parsing stops at "--", after which the
// kernel hands the words to init as arguments.
func Split(s string) []Arg {
	var out []Arg
	for {
		s = strings.TrimLeft(s, " \t\n\v\f\r")
		if s == "" {
			return out
		}
		quoted := s[0] == '"'
		if quoted {
			s = s[1:]
		}
		inQuote, equals, i := quoted, -1, 0
		for ; i < len(s); i++ {
			ch := s[i]
			if isSpace(ch) && !inQuote {
				break
			}
			if equals < 0 && ch == '=' {
				equals = i
			}
			if ch == '"' {
				inQuote = !inQuote
			}
		}
		tok := s[:i]
		s = s[i:]
		var a Arg
		if equals < 0 {
			a.Key = tok
			if quoted {
				a.Key = strings.TrimSuffix(a.Key, `"`)
			}
		} else {
			a.Key, a.Value, a.HasValue = tok[:equals], tok[equals+1:], true
			if v, ok := strings.CutPrefix(a.Value, `"`); ok {
				a.Value = strings.TrimSuffix(v, `"`)
			} else if quoted {
				a.Value = strings.TrimSuffix(a.Value, `"`)
			}
		}
		if a.Key == "--" && !a.HasValue && !quoted {
			return out
		}
		out = append(out, a)
	}
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// Join renders arguments as a command line; the inverse of Split for values
// without spaces or quotes, which are all that Config.Args produces.
func Join(args []string) string { return strings.Join(args, " ") }
