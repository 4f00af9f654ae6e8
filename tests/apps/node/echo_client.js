#!/usr/bin/env node
// A Node gRPC app for sidelb's tests: @grpc/grpc-js on ONE channel to a target.
//
// It dials the target (a test backend, or the proxy on localhost) the way a
// user's app does, with nothing but the address to choose, runs N unary calls
// and one call of each streaming kind plus metadata, large-message, failure,
// deadline and cancellation checks, and prints the JSON summary every app in
// tests/apps prints (tests/apps/README.md).
//
// The service is loaded from tests/proto/echo.proto at run time
// (@grpc/proto-loader): nothing is generated. Packages: the repository's
// node_modules/ (`make deps-node`).
'use strict';

const path = require('path');
const { parseArgs } = require('util');

let grpc, protoLoader;
try {
  grpc = require('@grpc/grpc-js');
  protoLoader = require('@grpc/proto-loader');
} catch (err) {
  console.error(`echo_client.js needs @grpc/grpc-js and @grpc/proto-loader: run make deps-node (${err.message})`);
  process.exit(1);
}

const PROTO = path.join(__dirname, '..', '..', 'proto', 'echo.proto');
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
const BACKEND_HEADER = 'x-sidelb-backend';

const CODE_NAMES = Object.fromEntries(Object.entries(grpc.status).map(([name, code]) => [code, name]));

function check(ok, detail, backends = []) {
  return { ok: Boolean(ok), detail, backends: [...new Set(backends.filter(Boolean))].sort() };
}

function failed(err) {
  return check(false, `${CODE_NAMES[err.code] ?? err.code}: ${err.details ?? err.message}`);
}

function values(md, key) {
  return md ? md.get(key).map(String) : [];
}

function shown(md) {
  const map = md.getMap();
  return Object.keys(map).sort().map((k) => `${k}=${map[k]}`).join(', ');
}

class App {
  constructor(stub, timeoutMs) {
    this.stub = stub;
    this.timeoutMs = timeoutMs;
  }

  deadline(ms = this.timeoutMs) {
    return { deadline: new Date(Date.now() + ms) };
  }

  // One unary call: resolves to {reply, err, header, trailer}, never rejects.
  call(request, metadata = new grpc.Metadata(), options = this.deadline()) {
    return new Promise((resolve) => {
      const out = {};
      const c = this.stub.Unary(request, metadata, options, (err, reply) => {
        out.err = err;
        out.reply = reply;
      });
      c.on('metadata', (md) => { out.header = md; });
      c.on('status', (s) => {
        out.trailer = s.metadata;
        // The callback has run by the time the status is emitted.
        setImmediate(() => resolve(out));
      });
    });
  }

  async unary(calls) {
    const byBackend = {};
    const statuses = {};
    for (let i = 0; i < calls; i++) {
      const { reply, err, trailer } = await this.call({ payload: Buffer.from(`node-${i}`) });
      const backend = err ? values(trailer, BACKEND_HEADER)[0] : reply.backend;
      const code = err ? CODE_NAMES[err.code] : 'OK';
      statuses[code] = (statuses[code] || 0) + 1;
      if (backend) byBackend[backend] = (byBackend[backend] || 0) + 1;
    }
    return { calls, by_backend: byBackend, statuses };
  }

  // Every reply of a reading stream, then its end (rejects with the status).
  static collect(stream) {
    return new Promise((resolve, reject) => {
      const got = [];
      stream.on('data', (r) => got.push(r));
      stream.on('error', reject);
      stream.on('end', () => resolve(got));
    });
  }

  async serverStream(replies = 5) {
    const got = await App.collect(this.stub.ServerStream({ payload: Buffer.from('ss'), reply_count: replies }, this.deadline()));
    const sequences = got.map((r) => Number(r.sequence));
    const ok = sequences.join() === [...Array(replies).keys()].join() && got.every((r) => r.payload.toString() === 'ss');
    return check(ok, `sequences [${sequences}]`, got.map((r) => r.backend));
  }

  clientStream(messages = 4) {
    return new Promise((resolve) => {
      const stream = this.stub.ClientStream(this.deadline(), (err, reply) => {
        if (err) return resolve(failed(err));
        const received = Number(reply.received);
        const bytes = Number(reply.received_bytes);
        resolve(check(received === messages && bytes === 10 * messages, `received ${received} messages, ${bytes} bytes`, [reply.backend]));
      });
      for (let i = 0; i < messages; i++) stream.write({ payload: Buffer.from('0123456789') });
      stream.end();
    });
  }

  async bidi(messages = 3, repliesEach = 2) {
    const stream = this.stub.Bidi(this.deadline());
    const done = App.collect(stream);
    for (let i = 0; i < messages; i++) stream.write({ payload: Buffer.from(`b${i}`), reply_count: repliesEach });
    stream.end();
    const got = await done;
    const expected = [];
    for (let i = 0; i < messages; i++) for (let j = 0; j < repliesEach; j++) expected.push(`b${i}/${i + 1}`);
    const actual = got.map((r) => `${r.payload}/${r.received}`);
    const ok = actual.join() === expected.join() && got.every((r, i) => Number(r.sequence) === i);
    return check(ok, `${got.length} replies`, got.map((r) => r.backend));
  }

  async metadata() {
    const md = new grpc.Metadata();
    md.set('x-echo-trace', 'node-123');
    md.set('x-other', 'not-echoed');
    const { reply, err, header, trailer } = await this.call({ payload: Buffer.from('md') }, md);
    if (err) return failed(err);
    const ok = values(header, 'x-echo-trace').join() === 'node-123'
      && values(trailer, 'x-echo-trace').join() === 'node-123'
      && values(header, 'x-other').length === 0
      && values(header, BACKEND_HEADER).join() === reply.backend;
    return check(ok, `headers [${shown(header)}], trailers [${shown(trailer)}]`, [reply.backend]);
  }

  async large(size) {
    const up = await this.call({ payload: Buffer.alloc(size, 'u') });
    if (up.err) return failed(up.err);
    const down = await this.call({ reply_size: size });
    if (down.err) return failed(down.err);
    const ok = up.reply.payload.length === size && up.reply.payload[0] === 'u'.charCodeAt(0) && down.reply.payload.length === size;
    return check(ok, `echoed ${up.reply.payload.length} bytes, received ${down.reply.payload.length} bytes`, [up.reply.backend, down.reply.backend]);
  }

  async failure() {
    const { err, trailer } = await this.call({ fail_code: grpc.status.FAILED_PRECONDITION, fail_message: 'asked to fail' });
    if (!err) return check(false, 'the call succeeded');
    const backends = values(trailer, BACKEND_HEADER);
    const ok = err.code === grpc.status.FAILED_PRECONDITION && err.details === 'asked to fail' && backends.length > 0;
    return check(ok, `${CODE_NAMES[err.code]}: ${err.details}`, backends);
  }

  async deadlineCheck() {
    const slow = await this.call({ payload: Buffer.from('slow'), delay_ms: 5000 }, new grpc.Metadata(), this.deadline(200));
    const code = slow.err ? CODE_NAMES[slow.err.code] : 'OK';
    const next = await this.call({ payload: Buffer.from('after') });
    const nextCode = next.err ? CODE_NAMES[next.err.code] : 'OK';
    const ok = code === 'DEADLINE_EXCEEDED' && !next.err;
    return check(ok, `200 ms deadline on a 5 s call: ${code}; next call: ${nextCode}`, [next.reply?.backend]);
  }

  async cancelCheck() {
    const stream = this.stub.ServerStream({ payload: Buffer.from('c'), reply_count: 50, delay_ms: 200 }, this.deadline());
    const outcome = await new Promise((resolve) => {
      let first;
      stream.on('data', (r) => {
        if (!first) {
          first = r;
          stream.cancel();
        }
      });
      stream.on('error', (err) => resolve({ first, code: CODE_NAMES[err.code] }));
      stream.on('end', () => resolve({ first, code: 'OK' }));
    });
    const next = await this.call({ payload: Buffer.from('after') });
    const nextCode = next.err ? CODE_NAMES[next.err.code] : 'OK';
    const ok = outcome.first && outcome.code === 'CANCELLED' && !next.err;
    return check(ok, `cancelled after the first reply: ${outcome.code}; next call: ${nextCode}`, [outcome.first?.backend, next.reply?.backend]);
  }
}

async function main() {
  const { values: args } = parseArgs({
    options: {
      target: { type: 'string' },
      authority: { type: 'string' },
      calls: { type: 'string', default: '100' },
      'large-bytes': { type: 'string', default: String(5 * 1024 * 1024) },
      timeout: { type: 'string', default: '10' },
    },
  });
  if (!args.target) {
    console.error('echo_client.js: --target HOST:PORT is required');
    process.exit(2);
  }
  const definition = protoLoader.loadSync(PROTO, { keepCase: true, longs: Number, defaults: true });
  const { Echo } = grpc.loadPackageDefinition(definition).sidelb.test;
  const options = {
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  };
  if (args.authority) options['grpc.default_authority'] = args.authority;
  const stub = new Echo(args.target, grpc.credentials.createInsecure(), options);
  const app = new App(stub, Number(args.timeout) * 1000);
  const summary = { language: 'node', target: args.target, unary: await app.unary(Number(args.calls)), checks: {} };
  const kinds = {
    server_stream: () => app.serverStream(),
    client_stream: () => app.clientStream(),
    bidi: () => app.bidi(),
    metadata: () => app.metadata(),
    failure: () => app.failure(),
    deadline: () => app.deadlineCheck(),
    cancel: () => app.cancelCheck(),
  };
  const large = Number(args['large-bytes']);
  if (large > 0) kinds.large = () => app.large(large);
  for (const [kind, run] of Object.entries(kinds)) {
    try {
      summary.checks[kind] = await run();
    } catch (err) {
      summary.checks[kind] = failed(err);
    }
  }
  stub.close();
  process.stdout.write(`${JSON.stringify(summary)}\n`);
}

main().catch((err) => {
  console.error(`echo_client.js: ${err.stack || err}`);
  process.exit(1);
});
