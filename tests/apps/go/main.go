// A Go gRPC app for sidelb's tests: grpc-go on ONE ClientConn to a target.
//
// It dials the target (a test backend, or the proxy on localhost) the way a
// user's app does, with nothing but the address to choose, runs N unary calls
// and one call of each streaming kind plus metadata, large-message, failure,
// deadline and cancellation checks, and prints the JSON summary every app in
// tests/apps prints (tests/apps/README.md).
//
// The stubs (package echopb) are generated from tests/proto/echo.proto by
// protoc at build time (scripts/ensure.sh go-app); none is committed.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"sidelb.test/apps/echo-client/echopb"
)

const (
	maxMessageBytes = 64 * 1024 * 1024
	backendHeader   = "x-sidelb-backend"
)

type check struct {
	OK       bool     `json:"ok"`
	Detail   string   `json:"detail"`
	Backends []string `json:"backends"`
}

type unarySummary struct {
	Calls     int            `json:"calls"`
	ByBackend map[string]int `json:"by_backend"`
	Statuses  map[string]int `json:"statuses"`
}

type summary struct {
	Language string           `json:"language"`
	Target   string           `json:"target"`
	Unary    unarySummary     `json:"unary"`
	Checks   map[string]check `json:"checks"`
}

func newCheck(ok bool, detail string, backends ...string) check {
	seen := map[string]bool{}
	list := []string{}
	for _, b := range backends {
		if b != "" && !seen[b] {
			seen[b] = true
			list = append(list, b)
		}
	}
	sort.Strings(list)
	return check{OK: ok, Detail: detail, Backends: list}
}

func failed(err error) check {
	s := status.Convert(err)
	return newCheck(false, fmt.Sprintf("%s: %s", codeName(s.Code()), s.Message()))
}

// codeNames are the canonical status names (DEADLINE_EXCEEDED), as every app prints them.
var codeNames = [...]string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
	"UNAUTHENTICATED",
}

func codeName(c codes.Code) string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("CODE_%d", c)
}

type app struct {
	stub    echopb.EchoClient
	timeout time.Duration
}

func (a *app) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), a.timeout)
}

func (a *app) unary(calls int) unarySummary {
	out := unarySummary{Calls: calls, ByBackend: map[string]int{}, Statuses: map[string]int{}}
	for i := 0; i < calls; i++ {
		ctx, cancel := a.ctx()
		var trailer metadata.MD
		reply, err := a.stub.Unary(ctx, &echopb.EchoRequest{Payload: []byte(fmt.Sprintf("go-%d", i))}, grpc.Trailer(&trailer))
		cancel()
		backend := ""
		if err == nil {
			backend = reply.GetBackend()
		} else if found := trailer.Get(backendHeader); len(found) > 0 {
			backend = found[0]
		}
		out.Statuses[codeName(status.Code(err))]++
		if backend != "" {
			out.ByBackend[backend]++
		}
	}
	return out
}

func (a *app) serverStream() check {
	const replies = 5
	ctx, cancel := a.ctx()
	defer cancel()
	stream, err := a.stub.ServerStream(ctx, &echopb.EchoRequest{Payload: []byte("ss"), ReplyCount: replies})
	if err != nil {
		return failed(err)
	}
	var sequences []uint64
	var backends []string
	ok := true
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return failed(err)
		}
		sequences = append(sequences, r.GetSequence())
		backends = append(backends, r.GetBackend())
		ok = ok && string(r.GetPayload()) == "ss"
	}
	for i, s := range sequences {
		ok = ok && s == uint64(i)
	}
	ok = ok && len(sequences) == replies
	return newCheck(ok, fmt.Sprintf("sequences %v", sequences), backends...)
}

func (a *app) clientStream() check {
	const messages = 4
	ctx, cancel := a.ctx()
	defer cancel()
	stream, err := a.stub.ClientStream(ctx)
	if err != nil {
		return failed(err)
	}
	for i := 0; i < messages; i++ {
		if err := stream.Send(&echopb.EchoRequest{Payload: []byte("0123456789")}); err != nil {
			break // the status comes with CloseAndRecv
		}
	}
	reply, err := stream.CloseAndRecv()
	if err != nil {
		return failed(err)
	}
	ok := reply.GetReceived() == messages && reply.GetReceivedBytes() == 10*messages
	return newCheck(ok, fmt.Sprintf("received %d messages, %d bytes", reply.GetReceived(), reply.GetReceivedBytes()), reply.GetBackend())
}

func (a *app) bidi() check {
	const messages, repliesEach = 3, 2
	ctx, cancel := a.ctx()
	defer cancel()
	stream, err := a.stub.Bidi(ctx)
	if err != nil {
		return failed(err)
	}
	var backends []string
	ok := true
	count := 0
	// One message at a time: each one's replies are read before the next is sent.
	for i := 0; i < messages; i++ {
		payload := []byte(fmt.Sprintf("b%d", i))
		if err := stream.Send(&echopb.EchoRequest{Payload: payload, ReplyCount: repliesEach}); err != nil {
			_, err = stream.Recv()
			return failed(err)
		}
		for j := 0; j < repliesEach; j++ {
			r, err := stream.Recv()
			if err != nil {
				return failed(err)
			}
			ok = ok && bytes.Equal(r.GetPayload(), payload) && r.GetReceived() == uint64(i+1) && r.GetSequence() == uint64(count)
			backends = append(backends, r.GetBackend())
			count++
		}
	}
	if err := stream.CloseSend(); err != nil {
		return failed(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		ok = false
	}
	return newCheck(ok, fmt.Sprintf("%d replies", count), backends...)
}

func (a *app) metadata() check {
	ctx, cancel := a.ctx()
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-echo-trace", "go-123", "x-other", "not-echoed")
	var header, trailer metadata.MD
	reply, err := a.stub.Unary(ctx, &echopb.EchoRequest{Payload: []byte("md")}, grpc.Header(&header), grpc.Trailer(&trailer))
	if err != nil {
		return failed(err)
	}
	ok := equal(header.Get("x-echo-trace"), "go-123") &&
		equal(trailer.Get("x-echo-trace"), "go-123") &&
		len(header.Get("x-other")) == 0 &&
		equal(header.Get(backendHeader), reply.GetBackend())
	return newCheck(ok, fmt.Sprintf("headers [%s], trailers [%s]", shown(header), shown(trailer)), reply.GetBackend())
}

func equal(values []string, want string) bool {
	return len(values) == 1 && values[0] == want
}

func shown(md metadata.MD) string {
	var parts []string
	for k, vs := range md {
		for _, v := range vs {
			parts = append(parts, k+"="+v)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func (a *app) large(size int) check {
	ctx, cancel := a.ctx()
	defer cancel()
	up, err := a.stub.Unary(ctx, &echopb.EchoRequest{Payload: bytes.Repeat([]byte("u"), size)})
	if err != nil {
		return failed(err)
	}
	down, err := a.stub.Unary(ctx, &echopb.EchoRequest{ReplySize: uint32(size)})
	if err != nil {
		return failed(err)
	}
	ok := len(up.GetPayload()) == size && up.GetPayload()[0] == 'u' && len(down.GetPayload()) == size
	return newCheck(ok, fmt.Sprintf("echoed %d bytes, received %d bytes", len(up.GetPayload()), len(down.GetPayload())), up.GetBackend(), down.GetBackend())
}

func (a *app) failure() check {
	ctx, cancel := a.ctx()
	defer cancel()
	var trailer metadata.MD
	_, err := a.stub.Unary(ctx, &echopb.EchoRequest{FailCode: int32(codes.FailedPrecondition), FailMessage: "asked to fail"}, grpc.Trailer(&trailer))
	if err == nil {
		return newCheck(false, "the call succeeded")
	}
	s := status.Convert(err)
	backends := trailer.Get(backendHeader)
	ok := s.Code() == codes.FailedPrecondition && s.Message() == "asked to fail" && len(backends) > 0
	return newCheck(ok, fmt.Sprintf("%s: %s", codeName(s.Code()), s.Message()), backends...)
}

// afterwards is a plain call on the same connection, which must succeed.
func (a *app) afterwards() (string, error) {
	ctx, cancel := a.ctx()
	defer cancel()
	reply, err := a.stub.Unary(ctx, &echopb.EchoRequest{Payload: []byte("after")})
	return reply.GetBackend(), err
}

func (a *app) deadline() check {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := a.stub.Unary(ctx, &echopb.EchoRequest{Payload: []byte("slow"), DelayMs: 5000})
	code := status.Code(err)
	next, nextErr := a.afterwards()
	ok := code == codes.DeadlineExceeded && nextErr == nil
	return newCheck(ok, fmt.Sprintf("200 ms deadline on a 5 s call: %s; next call: %s", codeName(code), codeName(status.Code(nextErr))), next)
}

func (a *app) cancel() check {
	ctx, cancel := a.ctx()
	defer cancel()
	stream, err := a.stub.ServerStream(ctx, &echopb.EchoRequest{Payload: []byte("c"), ReplyCount: 50, DelayMs: 200})
	if err != nil {
		return failed(err)
	}
	first, err := stream.Recv()
	if err != nil {
		return failed(err)
	}
	cancel()
	var code codes.Code
	for {
		if _, err = stream.Recv(); err != nil {
			code = status.Code(err)
			break
		}
	}
	next, nextErr := a.afterwards()
	ok := code == codes.Canceled && nextErr == nil
	return newCheck(ok, fmt.Sprintf("cancelled after the first reply: %s; next call: %s", codeName(code), codeName(status.Code(nextErr))), first.GetBackend(), next)
}

func main() {
	target := flag.String("target", "", "HOST:PORT to dial")
	authority := flag.String("authority", "", ":authority to send (default: the target)")
	calls := flag.Int("calls", 100, "unary calls to tally")
	largeBytes := flag.Int("large-bytes", 5*1024*1024, "size of the large-message check (0: skip it)")
	timeout := flag.Float64("timeout", 10, "seconds per call")
	flag.Parse()
	if *target == "" {
		fmt.Fprintln(os.Stderr, "echo-client: --target HOST:PORT is required")
		os.Exit(2)
	}
	options := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes), grpc.MaxCallSendMsgSize(maxMessageBytes)),
	}
	if *authority != "" {
		options = append(options, grpc.WithAuthority(*authority))
	}
	conn, err := grpc.NewClient(*target, options...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "echo-client: %v\n", err)
		os.Exit(1)
	}
	defer conn.Close()
	a := &app{stub: echopb.NewEchoClient(conn), timeout: time.Duration(*timeout * float64(time.Second))}
	out := summary{Language: "go", Target: *target, Unary: a.unary(*calls), Checks: map[string]check{}}
	out.Checks["server_stream"] = a.serverStream()
	out.Checks["client_stream"] = a.clientStream()
	out.Checks["bidi"] = a.bidi()
	out.Checks["metadata"] = a.metadata()
	out.Checks["failure"] = a.failure()
	out.Checks["deadline"] = a.deadline()
	out.Checks["cancel"] = a.cancel()
	if *largeBytes > 0 {
		out.Checks["large"] = a.large(*largeBytes)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintf(os.Stderr, "echo-client: %v\n", err)
		os.Exit(1)
	}
}
