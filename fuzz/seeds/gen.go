// Writes the seed inputs of the fuzz targets in the forms Go's encoding/json writes, plus the
// protocol's examples, one file each, into the directory given as the only argument. The
// committed corpora (fuzz/corpus/<target>/) hold its output; scripts/fuzz does not run it.
//
// Usage: go run gen.go DIR   (and, for the hand-written non-UTF-8 cases of tests/go/utf8.go,
// see fuzz/README.md)
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

type Message struct {
	Uid string
	Val string
}

type Resp struct {
	Uid, Val, Ts string
}

// Extra is a request with fields the protocol does not know, as a Go peer might send it.
type Extra struct {
	Uid   string
	Val   *string
	F     []float64
	I     int64
	B     bool
	N     *int
	M     map[string]any
	Inner Message
}

// val is tests/go/client.go's payload: braces and quotes in strings, a backslash, a newline,
// the characters Go escapes (<, >, &, U+2028) and non-ASCII text.
func val(i int) string {
	return fmt.Sprintf("hello %d {\"x\":[1,2]} \\ <a&b> \n\u2028 gr\u00fc\u00df \U0001F600 }{", i)
}

func marshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func main() {
	dir := os.Args[1]
	seeds := map[string][]byte{}

	// A Go client: conn.Write(json.Marshal(m)) per request, no separator.
	var client bytes.Buffer
	for i := 0; i < 3; i++ {
		client.Write(marshal(Message{Uid: fmt.Sprint(i + 1), Val: val(i)}))
	}
	seeds["go-client-stream"] = client.Bytes()

	// A Go server: json.Encoder, one response and a newline each.
	var server bytes.Buffer
	enc := json.NewEncoder(&server)
	ts := time.Date(2024, 5, 17, 12, 0, 0, 123456789, time.UTC).Format(time.RFC3339Nano)
	for i := 0; i < 2; i++ {
		enc.Encode(Resp{Uid: fmt.Sprint(i + 1), Val: "server: hello, " + val(i), Ts: ts})
	}
	seeds["go-server-stream"] = server.Bytes()

	// Invalid UTF-8 as Go marshals it (each bad byte becomes \ufffd), U+2029, control bytes.
	seeds["go-marshal-escapes"] = marshal(Message{Uid: "e\x00\x1f\x7f", Val: "bad \xff\xe2\x82 \u2029 \t\r"})

	// Floats, integers, booleans, null, nested values and a null Val, as Go writes them.
	v := "x"
	seeds["go-extra-fields"] = marshal(Extra{Uid: "f", Val: &v, F: []float64{1e-7, 1e21, 0.1, -1.5, 123456789, 5e-324},
		I: -9007199254740993, B: true, M: map[string]any{"a": []any{nil, "b", 2.5}}, Inner: Message{Uid: "in"}})
	seeds["go-null-val"] = marshal(Extra{Uid: "n"})

	for name, b := range seeds {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			panic(err)
		}
	}
}
