// go-compare: the client and the server `make compare` runs for every system
// it compares (tests/src/bin/sidelb-compare.rs).
//
// -mode=client is one grpc-go ClientConn to -target with the round_robin
// policy in its default service config, as a user of a headless Service sets
// it; for a target with one address that is one connection. It makes unary
// calls at a steady rate and prints, each window, one JSON line:
//
//	{"t_ms": <unix ms at the window's end>, "pods": {"<pod>": calls}, "failed": n,
//	 "codes": {"UNAVAILABLE": n}, "dials": n}
//
// where a pod is the reply's backend name, codes counts the failed calls by
// status, and dials counts the TCP
// connections the client opened in that window (its reconnects). The only
// thing that differs between systems is -target, except -kuberesolver: the
// code change kuberesolver asks of an app (registering its resolver, so that
// kubernetes:///svc.ns:port targets watch the API server's EndpointSlices with
// the pod's service-account token).
//
// -mode=server serves sidelb.test.Echo's Unary, naming its pod in every reply
// and in the x-sidelb-backend header; -max-connection-age sets
// keepalive.ServerParameters{MaxConnectionAge}, the server-side workaround.
// On SIGTERM it stops gracefully (GOAWAY, in-flight calls finish), bounded.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sercand/kuberesolver/v6"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"sidelb.test/apps/echo-client/echopb"
)

const (
	backendHeader = "x-sidelb-backend"
	roundRobin    = `{"loadBalancingConfig": [{"round_robin": {}}]}`
)

type window struct {
	TMs    int64          `json:"t_ms"`
	Pods   map[string]int `json:"pods"`
	Failed int            `json:"failed"`
	Codes  map[string]int `json:"codes"`
	Dials  int64          `json:"dials"`
}

func client(target string, rate int, windowMs int, duration time.Duration, timeout time.Duration) error {
	var dials atomic.Int64
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(roundRobin),
		grpc.WithContextDialer(dialer),
	)
	if err != nil {
		return err
	}
	defer conn.Close()
	stub := echopb.NewEchoClient(conn)

	var mu sync.Mutex
	current := window{Pods: map[string]int{}, Codes: map[string]int{}}
	done := time.After(duration)
	calls := time.NewTicker(time.Second / time.Duration(max(rate, 1)))
	defer calls.Stop()
	windows := time.NewTicker(time.Duration(max(windowMs, 10)) * time.Millisecond)
	defer windows.Stop()
	out := json.NewEncoder(os.Stdout)
	for {
		select {
		case <-done:
			return nil
		case <-windows.C:
			mu.Lock()
			current.TMs = time.Now().UnixMilli()
			current.Dials = dials.Swap(0)
			if err := out.Encode(current); err != nil {
				mu.Unlock()
				return err
			}
			current = window{Pods: map[string]int{}, Codes: map[string]int{}}
			mu.Unlock()
		case <-calls.C:
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			reply, err := stub.Unary(ctx, &echopb.EchoRequest{Payload: []byte("compare")})
			cancel()
			mu.Lock()
			if err != nil {
				current.Failed++
				current.Codes[status.Code(err).String()]++
			} else {
				current.Pods[reply.GetBackend()]++
			}
			mu.Unlock()
		}
	}
}

type echo struct {
	echopb.UnimplementedEchoServer
	name string
}

func (e *echo) Unary(ctx context.Context, req *echopb.EchoRequest) (*echopb.EchoReply, error) {
	_ = grpc.SetHeader(ctx, metadata.Pairs(backendHeader, e.name))
	return &echopb.EchoReply{Backend: e.name, Payload: req.GetPayload()}, nil
}

func server(addr, name string, maxAge, grace time.Duration) error {
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	var options []grpc.ServerOption
	if maxAge > 0 {
		options = append(options, grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionAge:      maxAge,
			MaxConnectionAgeGrace: grace,
		}))
	}
	s := grpc.NewServer(options...)
	echopb.RegisterEchoServer(s, &echo{name: name})
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		finished := make(chan struct{})
		go func() { s.GracefulStop(); close(finished) }()
		select {
		case <-finished:
		case <-time.After(grace):
			s.Stop()
		}
	}()
	fmt.Fprintf(os.Stderr, "go-compare server %s on %s, max connection age %v\n", name, listener.Addr(), maxAge)
	return s.Serve(listener)
}

func main() {
	mode := flag.String("mode", "client", "client or server")
	target := flag.String("target", "", "client: the gRPC target to dial")
	kube := flag.Bool("kuberesolver", false, "client: register kuberesolver (kubernetes:/// targets)")
	rate := flag.Int("rate", 50, "client: unary calls per second")
	windowMs := flag.Int("window-ms", 1000, "client: length of one window")
	duration := flag.Duration("duration", 10*time.Minute, "client: how long to run")
	timeout := flag.Duration("timeout", time.Second, "client: bound on one call")
	addr := flag.String("addr", "0.0.0.0:50051", "server: where to listen")
	name := flag.String("name", "", "server: the pod name replies carry")
	maxAge := flag.Duration("max-connection-age", 0, "server: MaxConnectionAge (0: none)")
	grace := flag.Duration("grace", 5*time.Second, "server: MaxConnectionAgeGrace and the bound on a graceful stop")
	flag.Parse()
	var err error
	switch *mode {
	case "client":
		if *target == "" {
			err = fmt.Errorf("-target is required")
			break
		}
		if *kube {
			kuberesolver.RegisterInCluster()
		}
		err = client(*target, *rate, *windowMs, *duration, *timeout)
	case "server":
		if *name == "" {
			*name, _ = os.Hostname()
		}
		err = server(*addr, *name, *maxAge, *grace)
	default:
		err = fmt.Errorf("-mode must be client or server, not %q", *mode)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-compare: %v\n", err)
		os.Exit(1)
	}
}
