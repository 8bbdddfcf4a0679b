// Requests and responses whose Val is not valid UTF-8, written by hand (json.Marshal would
// replace the bad bytes itself), with Go's own json.Decoder as the reference for what each
// one means: every case is a fixed or generated (fixed seed) string of bytes that are not
// UTF-8, sequences cut short, encoded surrogates and \u escapes of unpaired surrogates.
//
// Usage:
//
//	go run utf8.go -cases           prints one line per case: the request frame and the Val
//	                                Go decodes from it, both in hex
//	go run utf8.go -addr HOST:PORT  sends every case to an echo server on one connection and
//	                                checks that each answer is "server: hello, " + what Go
//	                                decodes; prints "ok <n>" and exits 0, or the problem and 1
//	go run utf8.go -listen ADDR     a server that answers the request whose Val is "<i>" with
//	                                case i, by hand, as its Val; prints "listening <host:port>"
//	                                first and exits when stdin closes
package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand"
	"net"
	"os"
	"strconv"
	"time"
	"unicode/utf8"
)

type Message struct {
	Uid string
	Val string
}

type Resp struct {
	Uid, Val, Ts string
}

// fixed are the cases worth naming; generated ones follow them.
var fixed = []string{
	"\xff\xfe",
	"\xe2\x82",         // a euro sign cut short: two bad bytes, not one
	"\xe2\x82x",        // cut short before ASCII
	"\xf0\x9f\x98",     // a four-byte sequence cut short
	"\xed\xa0\x80",     // a surrogate encoded in UTF-8
	"\xc0\x80",         // an overlong encoding
	"\xf4\x90\x80\x80", // past U+10FFFF
	`\ud800`,           // unpaired surrogate escapes
	`\udc00\ud800`,
	`\ud800\u0041`,
	`\ud800\ud83d\ude00`,
	`ok \ud83d\ude00 \u00e9 ` + "\xe2\x82\xac \x80",
}

// pieces are what generated cases are made of.
var pieces = []string{
	"a", " ", "\u00e9", "\u20ac", "\U0001F600", "\xe2\x82", "\xf0\x9f\x98", "\xc3", "\xed\xa0\x80",
	"\xc0\x80", "\xf4\x90\x80\x80", "\xef\xbf\xbd", `\ud800`, `\udc00`, `\ud83d`, `\ude00`,
	`\u0041`, `\n`, `\\`, `\"`, `{`, `}`,
}

// cases returns the raw contents of each case's Val, between the quotes.
func cases() []string {
	all := append([]string(nil), fixed...)
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 300; i++ {
		var b []byte
		for n := rng.Intn(10); n > 0; n-- {
			switch rng.Intn(4) {
			case 0:
				b = append(b, byte(0x80+rng.Intn(0x80)))
			case 1:
				b = append(b, fmt.Sprintf(`\u%04x`, 0xd800+rng.Intn(0x800))...)
			default:
				b = append(b, pieces[rng.Intn(len(pieces))]...)
			}
		}
		all = append(all, string(b))
	}
	return all
}

func request(uid, raw string) []byte {
	return []byte(`{"Uid":"` + uid + `","Val":"` + raw + `"}`)
}

// goDecodes is the reference: what Go's json.Decoder reads from the frame.
func goDecodes(frame []byte) (Message, error) {
	var m Message
	err := json.NewDecoder(bytes.NewReader(frame)).Decode(&m)
	return m, err
}

func main() {
	list := flag.Bool("cases", false, "print the cases and what Go decodes from them")
	addr := flag.String("addr", "", "echo server to send the cases to")
	listen := flag.String("listen", "", "address to answer on with the cases")
	flag.Parse()

	raw := cases()
	want := make([]string, len(raw))
	for i, r := range raw {
		frame := request(strconv.Itoa(i), r)
		m, err := goDecodes(frame)
		if err != nil {
			log.Fatalf("case %d %q: Go's decoder refuses it: %v", i, frame, err)
		}
		want[i] = m.Val
	}

	switch {
	case *list:
		out := bufio.NewWriter(os.Stdout)
		for i, r := range raw {
			fmt.Fprintf(out, "%s %s\n", hex.EncodeToString(request(strconv.Itoa(i), r)), hex.EncodeToString([]byte(want[i])))
		}
		out.Flush()
	case *addr != "":
		if err := client(*addr, raw, want); err != nil {
			fmt.Println("FAIL:", err)
			os.Exit(1)
		}
		fmt.Printf("ok %d\n", len(raw))
	case *listen != "":
		serve(*listen, raw)
	default:
		log.Fatal("one of -cases, -addr or -listen is needed")
	}
}

// client sends every case, back to back, and checks each answer against Go's reading.
func client(addr string, raw, want []string) error {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return err
	}
	var all []byte
	for i, r := range raw {
		all = append(all, request(strconv.Itoa(i), r)...)
	}
	werr := make(chan error, 1)
	go func() {
		_, err := conn.Write(all)
		werr <- err
	}()

	dec := json.NewDecoder(conn)
	seen := make([]bool, len(raw))
	for got := 0; got < len(raw); got++ {
		var frame json.RawMessage
		if err := dec.Decode(&frame); err != nil {
			return fmt.Errorf("reading answer %d of %d: %w", got+1, len(raw), err)
		}
		// Go would read bad bytes in an answer as U+FFFD too: check the bytes themselves.
		if !utf8.Valid(frame) {
			return fmt.Errorf("answer %q is not valid UTF-8", frame)
		}
		var r Resp
		if err := json.Unmarshal(frame, &r); err != nil {
			return fmt.Errorf("answer %q: %w", frame, err)
		}
		i, err := strconv.Atoi(r.Uid)
		if err != nil || i < 0 || i >= len(raw) || seen[i] {
			return fmt.Errorf("answer for an unknown or repeated Uid: %q", frame)
		}
		seen[i] = true
		if w := "server: hello, " + want[i]; r.Val != w {
			return fmt.Errorf("case %d %q: Val %q, Go reads %q", i, raw[i], r.Val, w)
		}
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		if err := tcp.CloseWrite(); err != nil {
			return err
		}
		var extra json.RawMessage
		if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
			return fmt.Errorf("after the last answer, want EOF, got %v (%s)", err, extra)
		}
	}
	return nil
}

// serve answers each request whose Val is a case number with that case, written by hand.
func serve(addr string, raw []string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func(conn net.Conn) {
			defer conn.Close()
			dec := json.NewDecoder(conn)
			for {
				var m Message
				if err := dec.Decode(&m); err != nil {
					return
				}
				i, err := strconv.Atoi(m.Val)
				if err != nil || i < 0 || i >= len(raw) {
					log.Printf("no case %q", m.Val)
					return
				}
				uid, _ := json.Marshal(m.Uid)
				ts := time.Now().UTC().Format(time.RFC3339Nano)
				answer := `{"Uid":` + string(uid) + `,"Val":"` + raw[i] + `","Ts":"` + ts + "\"}\n"
				if _, err := conn.Write([]byte(answer)); err != nil {
					return
				}
			}
		}(conn)
	}
}
