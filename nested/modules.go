package nested

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Module is one loadable kernel module.
type Module struct {
	Name string // normalized: "kvm_amd", not "kvm-amd"
	Path string // absolute path of the .ko (possibly .ko.xz, .ko.zst, .ko.gz)
}

// ModuleDB answers which file holds a module and what it depends on, from a
// kernel's modules.dep and modules.builtin.
type ModuleDB struct {
	dir     string
	path    map[string]string   // name -> path relative to dir
	deps    map[string][]string // name -> names of direct and indirect deps
	builtin map[string]bool
}

// LoadModuleDB reads dir/modules.dep and, if present, dir/modules.builtin.
func LoadModuleDB(dir string) (*ModuleDB, error) {
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("module index: %w", err)
	}
	defer f.Close()
	db, err := parseModulesDep(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	db.dir = dir
	b, err := os.Open(filepath.Join(dir, "modules.builtin"))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("module index: %w", err)
	default:
		defer b.Close()
		sc := bufio.NewScanner(b)
		for sc.Scan() {
			if line := strings.TrimSpace(sc.Text()); line != "" {
				db.builtin[moduleName(line)] = true
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("%s: %w", b.Name(), err)
		}
	}
	return db, nil
}

// parseModulesDep parses the "path: dep-path dep-path..." lines of modules.dep.
func parseModulesDep(r io.Reader) (*ModuleDB, error) {
	db := &ModuleDB{path: map[string]string{}, deps: map[string][]string{}, builtin: map[string]bool{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		file, rest, ok := strings.Cut(line, ":")
		file = strings.TrimSpace(file)
		if !ok || file == "" || !isModuleFile(file) {
			return nil, fmt.Errorf("line %d: want \"path.ko: deps...\", got %q", n, line)
		}
		name := moduleName(file)
		var deps []string
		for _, d := range strings.Fields(rest) {
			if !isModuleFile(d) {
				return nil, fmt.Errorf("line %d: dependency %q is not a module file", n, d)
			}
			deps = append(deps, moduleName(d))
		}
		db.path[name] = file
		db.deps[name] = deps
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return db, nil
}

var moduleSuffixes = []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"}

func isModuleFile(p string) bool {
	for _, s := range moduleSuffixes {
		if strings.HasSuffix(p, s) && len(p) > len(s) {
			return true
		}
	}
	return false
}

// moduleName turns "kernel/arch/x86/kvm/kvm-amd.ko.xz" or "kvm-amd" into
// "kvm_amd": the kernel treats '-' and '_' in module names as the same.
func moduleName(s string) string {
	s = filepath.Base(s)
	for _, suf := range moduleSuffixes {
		if strings.HasSuffix(s, suf) {
			s = strings.TrimSuffix(s, suf)
			break
		}
	}
	return strings.ReplaceAll(s, "-", "_")
}

// Resolve returns the modules needed to load names, dependencies first, each
// once. Modules built into the kernel are skipped; a name that is neither
// a module nor built in is an error.
func (db *ModuleDB) Resolve(names ...string) ([]Module, error) {
	var order []Module
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var visit func(name, from string) error
	visit = func(name, from string) error {
		switch state[name] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("module %s: dependency cycle through %s", from, name)
		}
		rel, ok := db.path[name]
		if !ok {
			if db.builtin[name] {
				state[name] = done
				return nil
			}
			if from != "" {
				return fmt.Errorf("module %s (needed by %s) is not in modules.dep", name, from)
			}
			return fmt.Errorf("module %s is neither in modules.dep nor built in", name)
		}
		state[name] = visiting
		// modules.dep lists every transitive dependency, but visiting each
		// one's own line too keeps the order right without trusting the
		// order depmod wrote them in.
		for _, d := range db.deps[name] {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = done
		order = append(order, Module{Name: name, Path: filepath.Join(db.dir, rel)})
		return nil
	}
	for _, n := range names {
		if err := visit(moduleName(n), ""); err != nil {
			return nil, err
		}
	}
	return order, nil
}
