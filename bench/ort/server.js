// A small hapi.v1.Inference server around ONNX Runtime (grpc-js), so that the
// same `hapi-client bench` drives it and hapi-server (bench/compare_ort.sh).
//
//   node bench/ort/server.js MODEL.onnx --listen=127.0.0.1:50081 [--mean=0.286 --std=0.353]
//
// Classify: raw_uint8 images of 1 x 28 x 28 (what hapi-client sends a 28x28
// grey model) -> (pixel/255 - mean) / std -> session.run (batch 1, one
// intra-op thread) -> softmax -> label and confidence of the final exit.
// GetServingStatus answers enough for the client (model, input spec,
// requests). No PNG/JPEG decoding, no metrics, no early exits: the cost of
// what hapi-server does beyond that is part of what the comparison shows.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const ort = require('onnxruntime-node');

const SIDE = 28;

function flags(argv) {
  const out = {};
  for (const a of argv) {
    const m = /^--([a-z_]+)=(.*)$/.exec(a);
    if (m) out[m[1]] = m[2];
  }
  return out;
}

async function main() {
  const [model, ...rest] = process.argv.slice(2);
  if (!model) {
    console.error('usage: server.js MODEL.onnx [--listen=HOST:PORT] [--mean=M --std=S]');
    process.exit(2);
  }
  const f = flags(rest);
  const listen = f.listen || '127.0.0.1:50081';
  const session = await ort.InferenceSession.create(model, {
    executionProviders: ['cpu'], intraOpNumThreads: 1, interOpNumThreads: 1,
    executionMode: 'sequential', graphOptimizationLevel: 'all',
  });
  // Input normalisation and class names from the file's metadata (export.py);
  // flags override.
  const meta = readMetadata(model);
  const mean = Number(f.mean ?? meta['hapi.mean'] ?? 0);
  const std = Number(f.std ?? meta['hapi.std'] ?? 1);
  const classNames = (meta['hapi.class_names'] || '').split(',');
  const outName = session.outputNames[session.outputNames.length - 1];
  const finalExit = Number(f.final_exit ?? 9);

  const protoDir = path.join(__dirname, '..', '..', 'proto');
  const def = protoLoader.loadSync(path.join(protoDir, 'hapi/v1/inference.proto'), {
    includeDirs: [protoDir], keepCase: true, longs: Number, enums: String, defaults: false,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(def).hapi.v1;

  const started = Date.now();
  let requests = 0;
  // One request at a time runs on this (single) JS thread: one input buffer.
  const pixels = new Float32Array(SIDE * SIDE);
  const input = new ort.Tensor('float32', pixels, [1, 1, SIDE, SIDE]);
  const scale = 1 / (255 * std), shift = mean / std;

  async function classify(call, callback) {
    const t0 = process.hrtime.bigint();
    const image = call.request.image || {};
    const raw = image.raw_uint8;
    if (!raw || raw.length !== SIDE * SIDE || (image.channels || 1) !== 1 ||
        image.height !== SIDE || image.width !== SIDE) {
      callback({code: grpc.status.INVALID_ARGUMENT,
                details: `want raw_uint8 of 1x${SIDE}x${SIDE}`});
      return;
    }
    for (let k = 0; k < raw.length; ++k) pixels[k] = raw[k] * scale - shift;
    let out;
    try {
      out = (await session.run({input}))[outName].data;
    } catch (e) {
      callback({code: grpc.status.INTERNAL, details: String(e)});
      return;
    }
    let best = 0, m = out[0];
    for (let k = 1; k < out.length; ++k) if (out[k] > m) { m = out[k]; best = k; }
    let sum = 0;
    for (let k = 0; k < out.length; ++k) sum += Math.exp(out[k] - m);
    const confidence = 1 / sum;
    ++requests;
    const exit = {exit_index: finalExit, depth: 1, label: best, class_name: classNames[best] || '',
                  confidence};
    callback(null, {
      label: best, class_name: exit.class_name, confidence, exit, exits_evaluated: 1,
      server_latency_s: Number(process.hrtime.bigint() - t0) / 1e9, variant: 'onnxruntime',
      request_id: call.request.request_id || '', final: true, batch_size: 1,
    });
  }

  function status(call, callback) {
    callback(null, {
      variant: 'onnxruntime', model: path.basename(model), enabled_exits: [],
      uptime_s: (Date.now() - started) / 1e3, requests,
      input: {channels: 1, height: SIDE, width: SIDE, mean: [mean], std: [std]},
    });
  }

  const unimplemented = (call, callback) => callback({code: grpc.status.UNIMPLEMENTED});
  const server = new grpc.Server();
  server.addService(pkg.Inference.service, {
    Classify: classify, GetServingStatus: status, ClassifyStream: (call) => call.destroy(),
    ClassifyProgressive: (call) => call.destroy(), LoadVariant: unimplemented,
  });
  server.bindAsync(listen, grpc.ServerCredentials.createInsecure(), (err) => {
    if (err) {
      console.error(`cannot listen on ${listen}: ${err.message}`);
      process.exit(1);
    }
    console.error(`onnxruntime ${ort.env.versions.node} serving ${model} on ${listen}`);
  });
  // Graceful, but not forever: a client that keeps its channel open must not hold the bench.
  const stop = () => {
    server.tryShutdown(() => process.exit(0));
    setTimeout(() => { server.forceShutdown(); process.exit(0); }, 1000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

// metadata_props of an ONNX file, without an ONNX parser: export.py writes
// them, and ORT's Node API does not expose them. Reads the protobuf by hand:
// ModelProto.metadata_props is field 14, StringStringEntryProto key 1 value 2.
function readMetadata(file) {
  const b = require('fs').readFileSync(file);
  const out = {};
  let i = 0;
  const varint = () => {
    let v = 0, s = 0, c;
    do { c = b[i++]; v += (c & 0x7f) * 2 ** s; s += 7; } while (c & 0x80);
    return v;
  };
  while (i < b.length) {
    const tag = varint(), field = Math.floor(tag / 8), wire = tag & 7;
    if (wire === 0) { varint(); continue; }
    if (wire === 1) { i += 8; continue; }
    if (wire === 5) { i += 4; continue; }
    if (wire !== 2) break;
    const len = varint(), end = i + len;
    if (field === 14) {
      let key = '', value = '';
      while (i < end) {
        const t = varint(), l = varint();
        const s = b.toString('utf8', i, i + l);
        i += l;
        if (t >> 3 === 1) key = s; else if (t >> 3 === 2) value = s;
      }
      out[key] = value;
    }
    i = end;
  }
  return out;
}

main().catch((e) => { console.error(e); process.exit(1); });
