package sidelb.test.apps;

import com.google.protobuf.ByteString;
import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientInterceptors;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.ProtoUtils;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientCalls;
import io.grpc.stub.ClientResponseObserver;
import io.grpc.stub.MetadataUtils;
import io.grpc.stub.StreamObserver;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Supplier;
import sidelb.test.EchoOuterClass.EchoReply;
import sidelb.test.EchoOuterClass.EchoRequest;

/**
 * A Java gRPC app for sidelb's tests: grpc-java on ONE channel to a target.
 *
 * <p>It dials the target (a test backend, or the proxy on localhost) the way a user's app
 * does, with nothing but the address to choose, runs N unary calls and one call of each
 * streaming kind plus metadata, large-message, failure, deadline and cancellation checks, and
 * prints the JSON summary every app in tests/apps prints (tests/apps/README.md).
 *
 * <p>The messages are generated from tests/proto/echo.proto at build time by the protobuf
 * Maven plugin with protoc from Maven Central. The service's four methods are described here
 * with grpc-java's own API ({@link MethodDescriptor}, {@link ClientCalls}), which is what
 * protoc-gen-grpc-java would generate: that plugin's native binaries are not served by the
 * registry this project builds from.
 */
public final class EchoClient {
  private static final int MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
  private static final Metadata.Key<String> BACKEND =
      Metadata.Key.of("x-sidelb-backend", Metadata.ASCII_STRING_MARSHALLER);
  private static final Metadata.Key<String> TRACE =
      Metadata.Key.of("x-echo-trace", Metadata.ASCII_STRING_MARSHALLER);
  private static final Metadata.Key<String> OTHER =
      Metadata.Key.of("x-other", Metadata.ASCII_STRING_MARSHALLER);

  /** One check's outcome, as JSON. */
  record Check(boolean ok, String detail, Collection<String> backends) {
    static Check of(boolean ok, String detail, String... backends) {
      TreeSet<String> set = new TreeSet<>();
      for (String b : backends) {
        if (b != null && !b.isEmpty()) {
          set.add(b);
        }
      }
      return new Check(ok, detail, set);
    }

    static Check failed(Throwable t) {
      Status s = Status.fromThrowable(t);
      return of(false, s.getCode() + ": " + s.getDescription());
    }

    String json() {
      List<String> names = new ArrayList<>();
      for (String b : backends) {
        names.add(quote(b));
      }
      return "{\"ok\":" + ok + ",\"detail\":" + quote(detail) + ",\"backends\":["
          + String.join(",", names) + "]}";
    }
  }

  private final ManagedChannel channel;
  private final long timeoutMs;

  private EchoClient(ManagedChannel channel, long timeoutMs) {
    this.channel = channel;
    this.timeoutMs = timeoutMs;
  }

  private static final String SERVICE = "sidelb.test.Echo";
  private static final MethodDescriptor<EchoRequest, EchoReply> UNARY =
      method("Unary", MethodDescriptor.MethodType.UNARY);
  private static final MethodDescriptor<EchoRequest, EchoReply> SERVER_STREAM =
      method("ServerStream", MethodDescriptor.MethodType.SERVER_STREAMING);
  private static final MethodDescriptor<EchoRequest, EchoReply> CLIENT_STREAM =
      method("ClientStream", MethodDescriptor.MethodType.CLIENT_STREAMING);
  private static final MethodDescriptor<EchoRequest, EchoReply> BIDI =
      method("Bidi", MethodDescriptor.MethodType.BIDI_STREAMING);

  private static MethodDescriptor<EchoRequest, EchoReply> method(
      String name, MethodDescriptor.MethodType type) {
    return MethodDescriptor.<EchoRequest, EchoReply>newBuilder()
        .setType(type)
        .setFullMethodName(MethodDescriptor.generateFullMethodName(SERVICE, name))
        .setRequestMarshaller(ProtoUtils.marshaller(EchoRequest.getDefaultInstance()))
        .setResponseMarshaller(ProtoUtils.marshaller(EchoReply.getDefaultInstance()))
        .build();
  }

  private CallOptions options(long ms) {
    return CallOptions.DEFAULT.withDeadlineAfter(ms, TimeUnit.MILLISECONDS);
  }

  private EchoReply unary(Channel on, EchoRequest request, long ms) {
    return ClientCalls.blockingUnaryCall(on, UNARY, options(ms), request);
  }

  private EchoReply unary(EchoRequest request) {
    return unary(channel, request, timeoutMs);
  }

  private static EchoRequest request(String payload) {
    return EchoRequest.newBuilder().setPayload(ByteString.copyFromUtf8(payload)).build();
  }

  private static String trailer(Throwable t, Metadata.Key<String> key) {
    Metadata trailers = Status.trailersFromThrowable(t);
    return trailers == null ? null : trailers.get(key);
  }

  String unary(int calls) {
    Map<String, Integer> byBackend = new TreeMap<>();
    Map<String, Integer> statuses = new TreeMap<>();
    for (int i = 0; i < calls; i++) {
      String backend;
      String code;
      try {
        backend = unary(request("java-" + i)).getBackend();
        code = "OK";
      } catch (StatusRuntimeException e) {
        backend = trailer(e, BACKEND);
        code = e.getStatus().getCode().name();
      }
      statuses.merge(code, 1, Integer::sum);
      if (backend != null) {
        byBackend.merge(backend, 1, Integer::sum);
      }
    }
    return "{\"calls\":" + calls + ",\"by_backend\":" + counts(byBackend) + ",\"statuses\":"
        + counts(statuses) + "}";
  }

  Check serverStream() {
    int replies = 5;
    List<Long> sequences = new ArrayList<>();
    List<String> backends = new ArrayList<>();
    boolean ok = true;
    Iterator<EchoReply> it =
        ClientCalls.blockingServerStreamingCall(
            channel,
            SERVER_STREAM,
            options(timeoutMs),
            request("ss").toBuilder().setReplyCount(replies).build());
    while (it.hasNext()) {
      EchoReply r = it.next();
      sequences.add(r.getSequence());
      backends.add(r.getBackend());
      ok &= r.getPayload().toStringUtf8().equals("ss");
    }
    for (int i = 0; i < sequences.size(); i++) {
      ok &= sequences.get(i) == i;
    }
    ok &= sequences.size() == replies;
    return Check.of(ok, "sequences " + sequences, backends.toArray(String[]::new));
  }

  Check clientStream() throws Exception {
    int messages = 4;
    CompletableFuture<EchoReply> reply = new CompletableFuture<>();
    StreamObserver<EchoRequest> requests =
        ClientCalls.asyncClientStreamingCall(
            channel.newCall(CLIENT_STREAM, options(timeoutMs)), observer(reply, r -> {}));
    for (int i = 0; i < messages; i++) {
      requests.onNext(request("0123456789"));
    }
    requests.onCompleted();
    EchoReply r = reply.get();
    boolean ok = r.getReceived() == messages && r.getReceivedBytes() == 10L * messages;
    return Check.of(
        ok,
        "received " + r.getReceived() + " messages, " + r.getReceivedBytes() + " bytes",
        r.getBackend());
  }

  Check bidi() throws Exception {
    int messages = 3;
    int repliesEach = 2;
    List<EchoReply> got = new ArrayList<>();
    CompletableFuture<EchoReply> done = new CompletableFuture<>();
    StreamObserver<EchoRequest> requests =
        ClientCalls.asyncBidiStreamingCall(
            channel.newCall(BIDI, options(timeoutMs)), observer(done, got::add));
    for (int i = 0; i < messages; i++) {
      requests.onNext(request("b" + i).toBuilder().setReplyCount(repliesEach).build());
    }
    requests.onCompleted();
    done.get();
    List<String> expected = new ArrayList<>();
    for (int i = 0; i < messages; i++) {
      for (int j = 0; j < repliesEach; j++) {
        expected.add("b" + i + "/" + (i + 1));
      }
    }
    List<String> actual = new ArrayList<>();
    boolean ok = true;
    for (int i = 0; i < got.size(); i++) {
      actual.add(got.get(i).getPayload().toStringUtf8() + "/" + got.get(i).getReceived());
      ok &= got.get(i).getSequence() == i;
    }
    ok &= actual.equals(expected);
    return Check.of(
        ok, got.size() + " replies", got.stream().map(EchoReply::getBackend).toArray(String[]::new));
  }

  Check metadata() {
    Metadata sent = new Metadata();
    sent.put(TRACE, "java-123");
    sent.put(OTHER, "not-echoed");
    AtomicReference<Metadata> headers = new AtomicReference<>();
    AtomicReference<Metadata> trailers = new AtomicReference<>();
    Channel intercepted =
        ClientInterceptors.intercept(
            channel,
            MetadataUtils.newAttachHeadersInterceptor(sent),
            MetadataUtils.newCaptureMetadataInterceptor(headers, trailers));
    EchoReply reply = unary(intercepted, request("md"), timeoutMs);
    Metadata h = headers.get();
    Metadata t = trailers.get();
    boolean ok =
        h != null
            && t != null
            && List.of("java-123").equals(list(h.getAll(TRACE)))
            && List.of("java-123").equals(list(t.getAll(TRACE)))
            && h.get(OTHER) == null
            && reply.getBackend().equals(h.get(BACKEND));
    return Check.of(ok, "headers [" + h + "], trailers [" + t + "]", reply.getBackend());
  }

  private static List<String> list(Iterable<String> values) {
    List<String> out = new ArrayList<>();
    if (values != null) {
      values.forEach(out::add);
    }
    return out;
  }

  Check large(int size) {
    byte[] up = new byte[size];
    Arrays.fill(up, (byte) 'u');
    EchoReply echoed =
        unary(EchoRequest.newBuilder().setPayload(ByteString.copyFrom(up)).build());
    EchoReply down = unary(EchoRequest.newBuilder().setReplySize(size).build());
    boolean ok =
        echoed.getPayload().size() == size
            && echoed.getPayload().byteAt(0) == 'u'
            && down.getPayload().size() == size;
    return Check.of(
        ok,
        "echoed " + echoed.getPayload().size() + " bytes, received " + down.getPayload().size()
            + " bytes",
        echoed.getBackend(),
        down.getBackend());
  }

  Check failure() {
    try {
      unary(
          EchoRequest.newBuilder()
              .setFailCode(Status.Code.FAILED_PRECONDITION.value())
              .setFailMessage("asked to fail")
              .build());
      return Check.of(false, "the call succeeded");
    } catch (StatusRuntimeException e) {
      Status s = e.getStatus();
      String backend = trailer(e, BACKEND);
      boolean ok =
          s.getCode() == Status.Code.FAILED_PRECONDITION
              && "asked to fail".equals(s.getDescription())
              && backend != null;
      return Check.of(ok, s.getCode() + ": " + s.getDescription(), backend);
    }
  }

  /** A plain call on the same channel: {backend or null, status name}. */
  private String[] afterwards() {
    try {
      return new String[] {unary(request("after")).getBackend(), "OK"};
    } catch (StatusRuntimeException e) {
      return new String[] {null, e.getStatus().getCode().name()};
    }
  }

  Check deadline() {
    String code;
    try {
      unary(channel, request("slow").toBuilder().setDelayMs(5000).build(), 200);
      code = "OK";
    } catch (StatusRuntimeException e) {
      code = e.getStatus().getCode().name();
    }
    String[] next = afterwards();
    boolean ok = code.equals("DEADLINE_EXCEEDED") && next[1].equals("OK");
    return Check.of(
        ok, "200 ms deadline on a 5 s call: " + code + "; next call: " + next[1], next[0]);
  }

  Check cancel() throws Exception {
    AtomicReference<String> first = new AtomicReference<>();
    CompletableFuture<String> ended = new CompletableFuture<>();
    ClientCalls.asyncServerStreamingCall(
        channel.newCall(SERVER_STREAM, options(timeoutMs)),
        request("c").toBuilder().setReplyCount(50).setDelayMs(200).build(),
            new ClientResponseObserver<EchoRequest, EchoReply>() {
              private ClientCallStreamObserver<EchoRequest> call;

              @Override
              public void beforeStart(ClientCallStreamObserver<EchoRequest> call) {
                this.call = call;
              }

              @Override
              public void onNext(EchoReply reply) {
                if (first.compareAndSet(null, reply.getBackend())) {
                  call.cancel("the app is done with it", null);
                }
              }

              @Override
              public void onError(Throwable t) {
                ended.complete(Status.fromThrowable(t).getCode().name());
              }

              @Override
              public void onCompleted() {
                ended.complete("OK");
              }
            });
    String code = ended.get();
    String[] next = afterwards();
    boolean ok = first.get() != null && code.equals("CANCELLED") && next[1].equals("OK");
    return Check.of(
        ok,
        "cancelled after the first reply: " + code + "; next call: " + next[1],
        first.get(),
        next[0]);
  }

  /** Completes `done` with the last reply at the end of the call, or with its error. */
  private static StreamObserver<EchoReply> observer(
      CompletableFuture<EchoReply> done, java.util.function.Consumer<EchoReply> each) {
    return new StreamObserver<>() {
      private EchoReply last;

      @Override
      public void onNext(EchoReply reply) {
        last = reply;
        each.accept(reply);
      }

      @Override
      public void onError(Throwable t) {
        done.completeExceptionally(t);
      }

      @Override
      public void onCompleted() {
        done.complete(last);
      }
    };
  }

  private static String counts(Map<String, Integer> map) {
    List<String> parts = new ArrayList<>();
    map.forEach((k, v) -> parts.add(quote(k) + ":" + v));
    return "{" + String.join(",", parts) + "}";
  }

  static String quote(String s) {
    StringBuilder out = new StringBuilder("\"");
    for (char c : Objects.toString(s, "").toCharArray()) {
      switch (c) {
        case '"' -> out.append("\\\"");
        case '\\' -> out.append("\\\\");
        default -> {
          if (c < 0x20) {
            out.append(String.format("\\u%04x", (int) c));
          } else {
            out.append(c);
          }
        }
      }
    }
    return out.append('"').toString();
  }

  /** A check that throws is a failed check, as in every other app. */
  private interface Run {
    Check run() throws Exception;
  }

  private static Check guarded(Run run) {
    try {
      return run.run();
    } catch (java.util.concurrent.ExecutionException e) {
      return Check.failed(e.getCause());
    } catch (Exception e) {
      return Check.failed(e);
    }
  }

  public static void main(String[] args) throws Exception {
    Map<String, String> flags = new LinkedHashMap<>();
    flags.put("calls", "100");
    flags.put("large-bytes", String.valueOf(5 * 1024 * 1024));
    flags.put("timeout", "10");
    for (String arg : args) {
      if (!arg.startsWith("--") || !arg.contains("=")) {
        System.err.println("EchoClient: flags are --name=value, got " + arg);
        System.exit(2);
      }
      int eq = arg.indexOf('=');
      flags.put(arg.substring(2, eq), arg.substring(eq + 1));
    }
    String target = flags.get("target");
    if (target == null) {
      System.err.println("EchoClient: --target=HOST:PORT is required");
      System.exit(2);
    }
    ManagedChannelBuilder<?> builder =
        ManagedChannelBuilder.forTarget(target).usePlaintext().maxInboundMessageSize(MAX_MESSAGE_BYTES);
    if (flags.containsKey("authority")) {
      builder.overrideAuthority(flags.get("authority"));
    }
    ManagedChannel channel = builder.build();
    EchoClient app =
        new EchoClient(channel, (long) (Double.parseDouble(flags.get("timeout")) * 1000));
    String unary = app.unary(Integer.parseInt(flags.get("calls")));
    Map<String, Supplier<Check>> kinds = new LinkedHashMap<>();
    kinds.put("server_stream", () -> guarded(app::serverStream));
    kinds.put("client_stream", () -> guarded(app::clientStream));
    kinds.put("bidi", () -> guarded(app::bidi));
    kinds.put("metadata", () -> guarded(app::metadata));
    kinds.put("failure", () -> guarded(app::failure));
    kinds.put("deadline", () -> guarded(app::deadline));
    kinds.put("cancel", () -> guarded(app::cancel));
    int large = Integer.parseInt(flags.get("large-bytes"));
    if (large > 0) {
      kinds.put("large", () -> guarded(() -> app.large(large)));
    }
    List<String> checks = new ArrayList<>();
    kinds.forEach((name, run) -> checks.add(quote(name) + ":" + run.get().json()));
    channel.shutdown().awaitTermination(5, TimeUnit.SECONDS);
    String summary =
        "{\"language\":\"java\",\"target\":" + quote(target) + ",\"unary\":" + unary
            + ",\"checks\":{" + String.join(",", checks) + "}}";
    System.out.println(summary);
  }
}
