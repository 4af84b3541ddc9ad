// ONNX Runtime's side of bench/compare_ort.sh (CPU execution provider).
//
//   node bench/ort/ort_bench.js check MODEL.onnx [--hapi_probs=F]
//       Runs the exported graph on MODEL.onnx.input.bin (bench/ort/export.py)
//       and compares its logits with PyTorch's (MODEL.onnx.torch-logits.bin):
//       max abs diff, top-1 agreement; with --hapi_probs (the project's
//       executor, hapi-bench-ort-reference --probs_out) compares softmax
//       probabilities and top-1 too. Exit code 1 when top-1 agreement with
//       the project is below 99.9% or a logit differs by more than 1e-3.
//   node bench/ort/ort_bench.js time MODEL.onnx [--samples=N] [--warmup=N]
//       session.run at batch 1, one intra-op thread, over the first N test
//       images (their normalised copies in MODEL.onnx.input.bin): one JSON line.
//   node bench/ort/ort_bench.js profile MODEL.onnx [--samples=N]
//       ORT's own profiler over N batch-1 runs: per-node kernel time per run,
//       after ORT's graph optimisations (fusions, NCHWc layout), as a table.
'use strict';

const fs = require('fs');
const path = require('path');
const zlib = require('zlib');
const ort = require('onnxruntime-node');

const DATA_DIR = '/usr/share/datasets/fashion-mnist';
const SIDE = 28;
const CLASSES = 10;

function flags(argv) {
  const out = {};
  for (const a of argv) {
    const m = /^--([a-z_]+)=(.*)$/.exec(a);
    if (m) out[m[1]] = m[2];
  }
  return out;
}

// export.py writes the inputs beside the full network's file; the
// .exits.onnx graph uses the same.
function inputFile(model, f) {
  return f.input || `${model.replace(/\.exits\.onnx$/, '')}.input.bin`;
}

function readFloats(file) {
  const b = fs.readFileSync(file);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}

function testLabels() {
  const file = path.join(DATA_DIR, 't10k-labels-idx1-ubyte.gz');
  const b = zlib.gunzipSync(fs.readFileSync(file));
  if (b.readUInt32BE(0) !== 2049) throw new Error(`${file}: not an IDX1 label file`);
  return b.subarray(8);
}

// One intra-op thread, as hapi-server --intra_op_threads=1; sequential
// execution; all graph optimisations (ORT's default level is already "all"
// for the CPU EP in Node; stated here so that the run does not depend on it).
async function openSession(model) {
  return ort.InferenceSession.create(model, {
    executionProviders: ['cpu'],
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
}

function argmax(a, off, n) {
  let best = 0;
  for (let k = 1; k < n; ++k) if (a[off + k] > a[off + best]) best = k;
  return best;
}

function softmaxInto(logits, off, out) {
  let m = -Infinity;
  for (let k = 0; k < CLASSES; ++k) m = Math.max(m, logits[off + k]);
  let s = 0;
  for (let k = 0; k < CLASSES; ++k) s += (out[k] = Math.exp(logits[off + k] - m));
  for (let k = 0; k < CLASSES; ++k) out[k] /= s;
}

async function check(model, f) {
  const session = await openSession(model);
  const input = readFloats(inputFile(model, f));
  const torchLogits = readFloats(`${model}.torch-logits.bin`);
  const n = input.length / (SIDE * SIDE);
  const labels = testLabels();
  const batch = 500;
  const logits = new Float32Array(n * CLASSES);
  for (let b = 0; b < n; b += batch) {
    const m = Math.min(batch, n - b);
    const t = new ort.Tensor('float32', input.subarray(b * SIDE * SIDE, (b + m) * SIDE * SIDE),
                             [m, 1, SIDE, SIDE]);
    const r = await session.run({input: t});
    logits.set(r.logits.data, b * CLASSES);
  }
  let maxLogit = 0, agreeTorch = 0, correct = 0;
  for (let i = 0; i < n; ++i) {
    for (let k = 0; k < CLASSES; ++k) {
      maxLogit = Math.max(maxLogit, Math.abs(logits[i * CLASSES + k] - torchLogits[i * CLASSES + k]));
    }
    const top = argmax(logits, i * CLASSES, CLASSES);
    agreeTorch += top === argmax(torchLogits, i * CLASSES, CLASSES);
    correct += top === labels[i];
  }
  const out = {
    what: 'check', model, samples: n, ort_accuracy: correct / n,
    ort_vs_torch_max_abs_logit_diff: maxLogit, ort_vs_torch_top1_agreement: agreeTorch / n,
  };
  let ok = maxLogit <= 1e-3;
  if (f.hapi_probs) {
    const hapi = readFloats(f.hapi_probs);
    if (hapi.length !== n * CLASSES) throw new Error(`${f.hapi_probs}: ${hapi.length / CLASSES} rows, want ${n}`);
    const p = new Float64Array(CLASSES);
    let maxProb = 0, agree = 0, hapiCorrect = 0;
    for (let i = 0; i < n; ++i) {
      softmaxInto(logits, i * CLASSES, p);
      for (let k = 0; k < CLASSES; ++k) maxProb = Math.max(maxProb, Math.abs(p[k] - hapi[i * CLASSES + k]));
      const top = argmax(hapi, i * CLASSES, CLASSES);
      agree += top === argmax(logits, i * CLASSES, CLASSES);
      hapiCorrect += top === labels[i];
    }
    Object.assign(out, {
      hapi_accuracy: hapiCorrect / n, ort_vs_hapi_max_abs_prob_diff: maxProb,
      ort_vs_hapi_top1_agreement: agree / n,
    });
    ok = ok && agree / n >= 0.999;
  }
  console.log(JSON.stringify(out));
  return ok ? 0 : 1;
}

function summarise(times) {
  const s = [...times].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return {mean_ms: s.reduce((a, b) => a + b, 0) / s.length, p50_ms: q(0.5), p99_ms: q(0.99)};
}

async function time(model, f) {
  const session = await openSession(model);
  const input = readFloats(inputFile(model, f));
  const images = input.length / (SIDE * SIDE);
  const samples = Math.min(Number(f.samples || 2000), images);
  const warmup = Number(f.warmup || 200);
  const labels = testLabels();
  const outName = session.outputNames[session.outputNames.length - 1];
  // One tensor per image, made before timing: the timed call is session.run
  // alone, as the executor's timing covers Run alone.
  const tensors = [];
  for (let i = 0; i < samples; ++i) {
    tensors.push(new ort.Tensor('float32', input.subarray(i * SIDE * SIDE, (i + 1) * SIDE * SIDE),
                                [1, 1, SIDE, SIDE]));
  }
  for (let i = 0; i < warmup; ++i) await session.run({input: tensors[i % samples]});
  const times = [];
  let correct = 0;
  for (let i = 0; i < samples; ++i) {
    const t0 = process.hrtime.bigint();
    const r = await session.run({input: tensors[i]});
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    correct += argmax(r[outName].data, 0, CLASSES) === labels[i];
  }
  console.log(JSON.stringify({what: 'ort_session_run', model: path.basename(model), samples,
                              ...summarise(times), accuracy: correct / samples}));
  return 0;
}

async function profile(model, f) {
  const input = readFloats(inputFile(model, f));
  const samples = Number(f.samples || 1000);
  const prefix = f.prefix || path.join(path.dirname(model), 'ort-profile');
  const session = await ort.InferenceSession.create(model, {
    executionProviders: ['cpu'], intraOpNumThreads: 1, interOpNumThreads: 1,
    executionMode: 'sequential', graphOptimizationLevel: 'all', enableProfiling: true,
    profileFilePrefix: prefix,
  });
  for (let i = 0; i < samples; ++i) {
    await session.run({input: new ort.Tensor('float32', input.subarray(i * SIDE * SIDE, (i + 1) * SIDE * SIDE),
                                             [1, 1, SIDE, SIDE])});
  }
  session.endProfiling();
  await session.release();
  const file = fs.readdirSync(path.dirname(prefix)).filter((n) => n.startsWith(path.basename(prefix)) && n.endsWith('.json'))
      .map((n) => path.join(path.dirname(prefix), n)).sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs)[0];
  const events = JSON.parse(fs.readFileSync(file, 'utf8'));
  const byNode = new Map();
  let runs = 0, runTotal = [];
  for (const e of events) {
    if (e.cat === 'Session' && e.name === 'model_run') { ++runs; runTotal.push(e.dur); }
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time')) continue;
    const key = `${e.args.op_name} ${e.name.replace(/_kernel_time$/, '')}`;
    const v = byNode.get(key) || {calls: 0, us: []};
    v.calls++; v.us.push(e.dur); byNode.set(key, v);
  }
  const med = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
  const rows = [...byNode.entries()].map(([k, v]) => [k, v.calls / runs, med(v.us) * v.calls / runs])
      .sort((a, b) => b[2] - a[2]);
  console.log(`ORT profile ${file}: ${runs} runs, model_run median ${med(runTotal)} us`);
  console.log('| node (after ORT optimisation) | calls/run | median us/run |\n|---|---|---|');
  let sum = 0;
  for (const [k, c, us] of rows) { sum += us; console.log(`| ${k} | ${c.toFixed(2)} | ${us.toFixed(1)} |`); }
  console.log(`| all nodes | | ${sum.toFixed(1)} |`);
  return 0;
}

async function main() {
  const [cmd, model, ...rest] = process.argv.slice(2);
  const f = flags(rest);
  if (cmd === 'check' && model) return check(model, f);
  if (cmd === 'time' && model) return time(model, f);
  if (cmd === 'profile' && model) return profile(model, f);
  console.error('usage: ort_bench.js check|time|profile MODEL.onnx [--hapi_probs=F] [--samples=N] [--warmup=N]');
  return 2;
}

main().then((code) => process.exit(code), (e) => { console.error(e); process.exit(1); });
