// A client for the JSON transport, written the way the original Go design's client is: each
// request goes out with conn.Write(json.Marshal(m)) and no separator, so the server reads
// {..}{..} back to back; responses are read with a json.Decoder and matched by Uid, in
// whatever order they come.
//
// Usage: go run client.go -addr 127.0.0.1:3000 -n 1000
//
// Prints "ok <n>" and exits 0 when every request got exactly one correct response; otherwise
// prints the problem and exits 1.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"
)

type Message struct {
	Uid string
	Val string
}

type Resp struct {
	Uid, Val, Ts string
}

func main() {
	addr := flag.String("addr", "127.0.0.1:3000", "server address")
	n := flag.Int("n", 1000, "number of requests")
	timeout := flag.Duration("timeout", 30*time.Second, "deadline for the whole exchange")
	flag.Parse()

	reordered, err := run(*addr, *n, *timeout)
	if err != nil {
		fmt.Println("FAIL:", err)
		os.Exit(1)
	}
	fmt.Printf("ok %d\n", *n)
	fmt.Printf("reordered %d\n", reordered)
}

// val makes a payload with the characters a JSON stream reader must get right: braces and
// quotes inside strings, backslashes, a newline, characters Go escapes (<, >, &, U+2028) and
// non-ASCII text.
func val(i int) string {
	return fmt.Sprintf("hello %d {\"x\":[1,2]} \\ <a&b> \n\u2028 gr\u00fc\u00df \U0001F600 }{", i)
}

// run sends n pipelined requests and checks the responses. It returns how many responses
// arrived in a different position than their request was sent.
func run(addr string, n int, timeout time.Duration) (int, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return 0, err
	}

	msgs := make([]Message, n)
	sent := make(map[string]int, n)
	for i := range msgs {
		msgs[i] = Message{Uid: strconv.Itoa(i + 1), Val: val(i)}
		sent[msgs[i].Uid] = i
	}

	// All requests from one goroutine, one Write each, no newline between them.
	werr := make(chan error, 1)
	go func() {
		for _, m := range msgs {
			b, err := json.Marshal(m)
			if err != nil {
				werr <- err
				return
			}
			if _, err := conn.Write(b); err != nil {
				werr <- fmt.Errorf("write: %w", err)
				return
			}
		}
		werr <- nil
	}()

	dec := json.NewDecoder(conn)
	seen := make([]bool, n)
	reordered := 0
	for got := 0; got < n; got++ {
		var r Resp
		if err := dec.Decode(&r); err != nil {
			return 0, fmt.Errorf("reading response %d of %d: %w", got+1, n, err)
		}
		i, ok := sent[r.Uid]
		if !ok {
			return 0, fmt.Errorf("response for unknown Uid %q", r.Uid)
		}
		if seen[i] {
			return 0, fmt.Errorf("second response for Uid %q", r.Uid)
		}
		seen[i] = true
		if want := "server: hello, " + msgs[i].Val; r.Val != want {
			return 0, fmt.Errorf("Uid %q: Val %q, want %q", r.Uid, r.Val, want)
		}
		if _, err := time.Parse(time.RFC3339Nano, r.Ts); err != nil {
			return 0, fmt.Errorf("Uid %q: Ts %q is not RFC 3339: %w", r.Uid, r.Ts, err)
		}
		if i != got {
			reordered++
		}
	}
	if err := <-werr; err != nil {
		return 0, err
	}

	// Half-close: the server must see the end of input, and close its side once it has
	// nothing left to answer.
	if tcp, ok := conn.(*net.TCPConn); ok {
		if err := tcp.CloseWrite(); err != nil {
			return 0, fmt.Errorf("close write: %w", err)
		}
		var extra json.RawMessage
		if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("after the last response, want EOF from the server, got %v (%s)", err, extra)
		}
	}
	return reordered, nil
}
