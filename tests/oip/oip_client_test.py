#!/usr/bin/env python3
"""The Open Inference Protocol as a stock client speaks it, against a real hapi-server.

Independent of the project's C++ code: the client stubs are generated at test
time from the vendored standard proto (proto/inference/grpc_service.proto) with
Debian's python3-grpc-tools, into a temporary directory, and outputs are read
as a stock client (Triton's, KServe's) reads them: numeric tensors from
raw_output_contents, decoded with `struct`/`array`. The server serves the
shipped model (repository/models/fmnist-resnet) under a hand-written variant;
its answers are compared with hapi.v1's (through the hapi-client binary) on
test images of Fashion-MNIST.

Usage: oip_client_test.py --server=BIN --client=BIN --source=DIR [unittest args]
"""
import argparse
import array
import gzip
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import zlib

ARGS = None
pb = None  # grpc_service_pb2, generated in setUpModule
pb_grpc = None
grpc = None

MODEL = "fmnist-resnet"
VARIANT = "oip-test"
DEVICE = "this-machine"
DATA_DIR = "/usr/share/datasets/fashion-mnist"
SIDE = 28
NUM_IMAGES = 200  # test images compared with hapi.v1


def generate_stubs(proto, out_dir):
    """grpc_service_pb2(_grpc) from the vendored proto, with python3-grpc-tools."""
    proto_dir = os.path.dirname(os.path.dirname(proto))  # the proto root: proto/
    rel = os.path.relpath(proto, proto_dir)
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}", f"--python_out={out_dir}",
           f"--grpc_python_out={out_dir}", rel]
    os.makedirs(out_dir, exist_ok=True)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{p.stdout}{p.stderr}")
    sys.path.insert(0, out_dir)
    global pb, pb_grpc, grpc
    import grpc as grpc_module
    from inference import grpc_service_pb2, grpc_service_pb2_grpc
    grpc, pb, pb_grpc = grpc_module, grpc_service_pb2, grpc_service_pb2_grpc


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_idx_images(count):
    with gzip.open(os.path.join(DATA_DIR, "t10k-images-idx3-ubyte.gz"), "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 2051 and rows == SIDE and cols == SIDE, (magic, rows, cols)
        return [f.read(SIDE * SIDE) for _ in range(min(count, n))]


def png_gray(pixels, width, height):
    """A minimal 8-bit grayscale PNG (filter 0 on every row)."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    rows = b"".join(b"\x00" + pixels[y * width:(y + 1) * width] for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def write_repository(root):
    """The shipped model, this machine's profile from docs/, and one variant."""
    src = os.path.join(ARGS.source, "repository", "models", MODEL)
    shutil.copytree(src, os.path.join(root, "models", MODEL))
    os.makedirs(os.path.join(root, "devices", DEVICE))
    shutil.copy(os.path.join(ARGS.source, "docs", "this-machine.profile.pbtxt"),
                os.path.join(root, "devices", DEVICE, "profile.pbtxt"))
    os.makedirs(os.path.join(root, "variants", VARIANT))
    with open(os.path.join(root, "variants", VARIANT, "variant.pbtxt"), "w") as f:
        f.write(f'id: "{VARIANT}"\nmodel: "{MODEL}"\ndevice: "{DEVICE}"\n'
                'exit_policy: "max_softmax"\nenabled_exits: 0\nenabled_exits: 4\n'
                'thresholds: 0.9\nthresholds: 0.9\ncreated_at: "2024-01-01T00:00:00Z"\n'
                'sla { latency_budget_ms: 5 statistic: MEAN }\n')


# --- the request and response as a stock client builds and reads them -------

def image_request(images, datatype="UINT8", typed=False, model=MODEL, version=""):
    r = pb.ModelInferRequest(model_name=model, model_version=version)
    t = r.inputs.add(name="image", datatype=datatype, shape=[len(images), 1, SIDE, SIDE])
    if datatype == "UINT8":
        if typed:
            t.contents.uint_contents.extend(b for image in images for b in image)
        else:
            r.raw_input_contents.append(b"".join(images))
    else:
        values = array.array("f", (b / 255.0 for image in images for b in image))
        if sys.byteorder != "little":
            values.byteswap()
        if typed:
            t.contents.fp32_contents.extend(values)
        else:
            r.raw_input_contents.append(values.tobytes())
    return r


def bytes_request(images, typed=False):
    r = pb.ModelInferRequest(model_name=MODEL)
    t = r.inputs.add(name="image", datatype="BYTES", shape=[len(images)])
    pngs = [png_gray(image, SIDE, SIDE) for image in images]
    if typed:
        t.contents.bytes_contents.extend(pngs)
    else:
        r.raw_input_contents.append(b"".join(struct.pack("<I", len(p)) + p for p in pngs))
    return r


def decode_outputs(response):
    """{name: (shape, values)} from raw_output_contents, by datatype."""
    formats = {"INT64": "q", "INT32": "i", "FP32": "f"}
    assert len(response.outputs) == len(response.raw_output_contents)
    out = {}
    for tensor, raw in zip(response.outputs, response.raw_output_contents):
        code = formats[tensor.datatype]
        values = array.array(code)
        values.frombytes(raw)
        if sys.byteorder != "little":
            values.byteswap()
        count = 1
        for d in tensor.shape:
            count *= d
        assert len(values) == count, (tensor.name, list(tensor.shape), len(values))
        out[tensor.name] = (list(tensor.shape), list(values))
    return out


class OipClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hapi-oip-")
        generate_stubs(os.path.join(ARGS.source, "proto", "inference", "grpc_service.proto"),
                       os.path.join(cls.tmp, "stubs"))
        cls.repo = os.path.join(cls.tmp, "repository")
        write_repository(cls.repo)
        cls.port = free_port()
        cls.log = open(os.path.join(cls.tmp, "hapi-server.log"), "w")
        cls.server = subprocess.Popen(
            [ARGS.server, f"--repository={cls.repo}", f"--variant={VARIANT}",
             f"--listen=127.0.0.1:{cls.port}", "--metrics_address="],
            stdout=cls.log, stderr=subprocess.STDOUT)
        cls.channel = grpc.insecure_channel(f"127.0.0.1:{cls.port}")
        cls.stub = pb_grpc.GRPCInferenceServiceStub(cls.channel)
        deadline = time.time() + 60
        while True:
            try:
                if cls.stub.ServerReady(pb.ServerReadyRequest(), timeout=2).ready:
                    break
            except grpc.RpcError:
                pass
            if cls.server.poll() is not None or time.time() > deadline:
                cls.tearDownClass()
                raise AssertionError("hapi-server did not become ready; see its log")
            time.sleep(0.2)
        cls.images = read_idx_images(NUM_IMAGES)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        if cls.server.poll() is None:
            cls.server.send_signal(signal.SIGTERM)
            try:
                cls.server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                cls.server.kill()
        cls.log.close()
        if os.environ.get("HAPI_KEEP_TMP"):
            print(f"kept {cls.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def infer(self, request, timeout=30):
        return self.stub.ModelInfer(request, timeout=timeout)

    def assert_error(self, code, fragment, call, *args):
        with self.assertRaises(grpc.RpcError) as caught:
            call(*args)
        self.assertEqual(caught.exception.code(), code, caught.exception.details())
        self.assertIn(fragment, caught.exception.details())

    # --- health and metadata ---------------------------------------------

    def test_server_live_ready_and_metadata(self):
        self.assertTrue(self.stub.ServerLive(pb.ServerLiveRequest()).live)
        self.assertTrue(self.stub.ServerReady(pb.ServerReadyRequest()).ready)
        meta = self.stub.ServerMetadata(pb.ServerMetadataRequest())
        self.assertEqual(meta.name, "hapi-server")
        self.assertTrue(meta.version)
        self.assertEqual(list(meta.extensions), [])

    def test_model_ready(self):
        ready = lambda name, version="": self.stub.ModelReady(
            pb.ModelReadyRequest(name=name, version=version)).ready
        self.assertTrue(ready(MODEL))
        self.assertTrue(ready(MODEL, VARIANT))
        self.assertFalse(ready(MODEL, "another-variant"))
        self.assertFalse(ready("resnet50"))

    def test_model_metadata(self):
        meta = self.stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL))
        self.assertEqual(meta.name, MODEL)
        self.assertEqual(list(meta.versions), [VARIANT])
        self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in meta.inputs],
                         [("image", "FP32", [-1, 1, SIDE, SIDE])])
        self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in meta.outputs],
                         [("label", "INT64", [-1]), ("confidence", "FP32", [-1]),
                          ("exit", "INT32", [-1]), ("probabilities", "FP32", [-1, 10])])
        self.assert_error(grpc.StatusCode.NOT_FOUND, "resnet50", self.stub.ModelMetadata,
                          pb.ModelMetadataRequest(name="resnet50"))

    # --- inference -----------------------------------------------------------

    def test_answers_equal_hapi_v1_on_test_images(self):
        """Image by image, OIP answers as hapi.v1 does (so accuracy is equal)."""
        out = subprocess.run(
            [ARGS.client, f"--target=127.0.0.1:{self.port}", "classify", f"--idx={NUM_IMAGES}",
             "--json"], check=True, capture_output=True, text=True, timeout=120).stdout
        hapi = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        self.assertEqual(len(hapi), NUM_IMAGES)
        for i, image in enumerate(self.images):
            response = self.infer(image_request([image]))
            self.assertEqual(response.model_version, VARIANT)
            self.assertEqual(response.parameters["hapi_variant"].string_param, VARIANT)
            outputs = decode_outputs(response)
            self.assertEqual(sorted(outputs), ["confidence", "exit", "label"])
            self.assertEqual(outputs["label"][1][0], hapi[i].get("label", 0), i)
            self.assertEqual(outputs["exit"][1][0], hapi[i].get("exit", {}).get("exit_index", 0), i)
            self.assertAlmostEqual(outputs["confidence"][1][0], hapi[i]["confidence"], places=5)

    def test_batch_equals_single_requests(self):
        images = self.images[:16]
        batch = decode_outputs(self.infer(image_request(images, "FP32")))
        self.assertEqual(batch["label"][0], [16])
        for i, image in enumerate(images):
            one = decode_outputs(self.infer(image_request([image], "FP32")))
            for name in ("label", "exit"):
                self.assertEqual(batch[name][1][i], one[name][1][0], (name, i))
            self.assertAlmostEqual(batch["confidence"][1][i], one["confidence"][1][0], places=5)

    def test_typed_raw_and_encoded_agree(self):
        images = self.images[:8]
        want = decode_outputs(self.infer(image_request(images)))
        for request in (image_request(images, typed=True), image_request(images, "FP32"),
                        image_request(images, "FP32", typed=True), bytes_request(images),
                        bytes_request(images, typed=True)):
            got = decode_outputs(self.infer(request))
            self.assertEqual(got["label"], want["label"])
            self.assertEqual(got["exit"], want["exit"])

    def test_probabilities_on_request(self):
        request = image_request(self.images[:4])
        for name in ("probabilities", "label"):
            request.outputs.add(name=name)
        response = self.infer(request)
        self.assertEqual([t.name for t in response.outputs], ["probabilities", "label"])
        outputs = decode_outputs(response)
        shape, values = outputs["probabilities"]
        self.assertEqual(shape, [4, 10])
        for k in range(4):
            row = values[k * 10:(k + 1) * 10]
            self.assertAlmostEqual(sum(row), 1.0, places=4)
            self.assertEqual(row.index(max(row)), outputs["label"][1][k])

    def test_latency_budget_parameter(self):
        request = image_request(self.images[:2])
        request.parameters["hapi_latency_budget_ms"].int64_param = 1000
        response = self.infer(request)
        self.assertEqual(response.parameters["hapi_cut_by_deadline"].int64_param, 0)
        # No exit fits in a microsecond.
        request.parameters["hapi_latency_budget_ms"].string_param = "0.001"
        self.assert_error(grpc.StatusCode.DEADLINE_EXCEEDED, "first exit", self.infer, request)

    # --- errors ----------------------------------------------------------------

    def test_errors(self):
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        self.assert_error(grpc.StatusCode.NOT_FOUND, "resnet50", self.infer,
                          image_request(self.images[:1], model="resnet50"))
        self.assert_error(grpc.StatusCode.NOT_FOUND, "v9", self.infer,
                          image_request(self.images[:1], version="v9"))
        wrong_shape = image_request(self.images[:1])
        wrong_shape.inputs[0].shape[:] = [1, 1, SIDE, SIDE - 1]
        self.assert_error(invalid, "'image'", self.infer, wrong_shape)
        wrong_type = image_request(self.images[:1])
        wrong_type.inputs[0].datatype = "INT16"
        self.assert_error(invalid, "'image'", self.infer, wrong_type)
        short = image_request(self.images[:2])
        short.raw_input_contents[0] = short.raw_input_contents[0][:-1]
        self.assert_error(invalid, "'image'", self.infer, short)
        not_png = bytes_request(self.images[:1], typed=True)
        not_png.inputs[0].contents.bytes_contents[0] = b"GIF89a" + bytes(100)
        self.assert_error(invalid, "'image'", self.infer, not_png)
        unknown_output = image_request(self.images[:1])
        unknown_output.outputs.add(name="logits")
        self.assert_error(invalid, "'logits'", self.infer, unknown_output)
        bad_budget = image_request(self.images[:1])
        bad_budget.parameters["hapi_latency_budget_ms"].string_param = "soon"
        self.assert_error(invalid, "hapi_latency_budget_ms", self.infer, bad_budget)
        self.assert_error(grpc.StatusCode.UNIMPLEMENTED, "", self.stub.RepositoryModelLoad,
                          pb.RepositoryModelLoadRequest(model_name=MODEL))
        # Still serving.
        self.assertTrue(self.stub.ServerReady(pb.ServerReadyRequest()).ready)


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--client", required=True)
    parser.add_argument("--source", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
