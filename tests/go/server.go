// An echo server for the JSON transport, written the way the original Go design's server is:
// per connection, a json.Decoder reads requests and each one is answered from its own
// goroutine (after a small random delay, so responses leave out of order) through a
// json.Encoder guarded by a mutex. Encode ends each response with a newline.
//
// Usage: go run server.go -addr 127.0.0.1:0
//
// The first line on stdout is "listening <host:port>", the address actually bound.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand"
	"net"
	"os"
	"sync"
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
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	maxDelay := flag.Duration("max-delay", time.Millisecond, "random delay before each answer, at most")
	stdinExit := flag.Bool("exit-on-stdin-eof", false, "exit when stdin closes (the parent is gone)")
	flag.Parse()
	rand.Seed(time.Now().UnixNano())

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening %s\n", ln.Addr())

	if *stdinExit {
		go func() {
			io.Copy(io.Discard, os.Stdin)
			os.Exit(0)
		}()
	}

	for {
		conn, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go serve(conn, *maxDelay)
	}
}

func serve(conn net.Conn, maxDelay time.Duration) {
	defer conn.Close()
	dec := json.NewDecoder(conn)
	enc := json.NewEncoder(conn)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for {
		var m Message
		if err := dec.Decode(&m); err != nil {
			if !errors.Is(err, io.EOF) {
				log.Printf("%s: %v", conn.RemoteAddr(), err)
			}
			break
		}
		wg.Add(1)
		go func(m Message) {
			defer wg.Done()
			if maxDelay > 0 {
				time.Sleep(time.Duration(rand.Int63n(int64(maxDelay))))
			}
			mu.Lock()
			defer mu.Unlock()
			// Ts is taken under the lock, so the order of the Ts values is the order of the
			// responses on the wire.
			r := Resp{Uid: m.Uid, Val: "server: hello, " + m.Val, Ts: time.Now().UTC().Format(time.RFC3339Nano)}
			if err := enc.Encode(r); err != nil {
				log.Printf("%s: %v", conn.RemoteAddr(), err)
			}
		}(m)
	}
	// Answer everything already read, then close.
	wg.Wait()
}
