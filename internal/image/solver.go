package image

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// errNoSolverData means kiwi printed no package list.
var errNoSolverData = errors.New("kiwi printed no package list")

// parseSolverOutput splits the stdout of `kiwi-ng image info
// --resolve-package-list` into kiwi's log lines, which are copied to log,
// and the JSON document that follows them (it starts at the first line
// beginning with '{', as the original cb-prepare read it). The document is
// re-encoded with sorted keys and four-space indentation, so the same
// package list always gives the same file.
func parseSolverOutput(out []byte, log io.Writer) ([]byte, error) {
	var doc bytes.Buffer
	inDoc := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if !inDoc && strings.HasPrefix(line, "{") {
			inDoc = true
		}
		if inDoc {
			doc.WriteString(line)
			doc.WriteByte('\n')
		} else {
			fmt.Fprintln(log, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read package list: %w", err)
	}
	if !inDoc {
		return nil, errNoSolverData
	}
	var v map[string]any
	dec := json.NewDecoder(&doc)
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decode package list: %w", err)
	}
	var enc bytes.Buffer
	e := json.NewEncoder(&enc)
	e.SetEscapeHTML(false)
	e.SetIndent("", "    ")
	if err := e.Encode(v); err != nil {
		return nil, fmt.Errorf("encode package list: %w", err)
	}
	return enc.Bytes(), nil
}
