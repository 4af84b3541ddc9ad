#include "tests/server/server_fixture.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/device_profile.h"
#include "core/fashion_mnist.h"
#include "core/files.h"
#include "core/model_metadata.h"
#include "core/repository_layout.h"
#include "gtest/gtest.h"
#include "server/live_monitor.h"
#include "stb_image_write.h"
#include "tests/test_util.h"

namespace hapi {
namespace testing {
namespace {

// Fails loudly: without its fixture no test of this binary means anything.
[[noreturn]] void Die(const std::string& what) {
  ADD_FAILURE() << what;
  std::fprintf(stderr, "server test fixture: %s\n", what.c_str());
  std::abort();
}

// Max-softmax thresholds for `exits` (ascending), each the median
// confidence of the fixture's images that reach that exit (those that did not
// leave at an earlier one): about half of what reaches an exit leaves there.
// A median over every image would not do: the fake model's exits rank the
// images alike, so the images that pass exit 0's median are all below exit
// 2's and no image would ever leave at exit 2.
std::vector<float> MedianThresholds(const ServerFixture& f, const std::vector<int>& exits) {
  std::vector<float> pixels;
  for (int i = 0; i < f.num_images; ++i) {
    std::vector<float> p = f.Pixels(i);
    pixels.insert(pixels.end(), p.begin(), p.end());
  }
  const Model& model = *f.model;
  auto x = model.Input(pixels.data(), f.num_images);
  if (!x.ok()) Die(x.status().ToString());
  std::vector<bool> active(f.num_images, true);
  std::vector<float> thresholds;
  int stage = 0;
  for (int exit : exits) {
    for (; stage <= model.ExitStage(exit); ++stage) {
      if (absl::Status st = model.RunStage(stage, **x); !st.ok()) Die(st.ToString());
    }
    std::vector<float> probs;
    if (absl::Status st = model.RunHead(exit, **x, &probs); !st.ok()) Die(st.ToString());
    std::vector<float> confidence(f.num_images), reaching;
    for (int i = 0; i < f.num_images; ++i) {
      auto row = probs.begin() + static_cast<size_t>(i) * model.num_classes();
      confidence[i] = *std::max_element(row, row + model.num_classes());
      if (active[i]) reaching.push_back(confidence[i]);
    }
    if (reaching.empty()) Die("no fixture image reaches exit " + std::to_string(exit));
    std::nth_element(reaching.begin(), reaching.begin() + reaching.size() / 2, reaching.end());
    thresholds.push_back(reaching[reaching.size() / 2]);
    for (int i = 0; i < f.num_images; ++i) {
      if (confidence[i] >= thresholds.back()) active[i] = false;
    }
  }
  return thresholds;
}

v1::VariantManifest MakeVariant(const std::string& id, const std::string& device,
                                std::vector<int> exits, std::vector<float> thresholds,
                                int num_exits) {
  v1::VariantManifest v;
  v.set_id(id);
  v.set_model(kModelName);
  v.set_device(device);
  v.set_exit_policy("max_softmax");
  for (int e : exits) v.add_enabled_exits(e);
  for (float t : thresholds) v.add_thresholds(t);
  // Any plausible split: the server only reports these.
  for (int e = 0; e < num_exits; ++e) {
    bool enabled = e == num_exits - 1 || std::count(exits.begin(), exits.end(), e) > 0;
    v.add_predicted_exit_ratios(enabled ? 1.0 / (exits.size() + 1) : 0.0);
  }
  v.mutable_sla()->set_latency_budget_ms(5);
  v.mutable_sla()->set_statistic(v1::MEAN);
  v.set_predicted_accuracy(0.8);
  v.mutable_predicted_latency()->set_mean_ms(1.5);
  v.set_created_at("2024-01-01T00:00:00Z");
  return v;
}

// A profile whose stages after the first look very slow.
// WriteTextProtoAtomically into a directory created first.
void WriteProto(const std::string& dir, const std::string& file,
                const google::protobuf::Message& m) {
  absl::Status st = MakeDirectories(dir);
  if (st.ok()) st = WriteTextProtoAtomically(absl::StrCat(dir, "/", file), m);
  if (!st.ok()) Die(st.ToString());
}

v1::DeviceProfile HandMadeProfile(const std::string& name, const v1::ModelManifest& manifest,
                                  double stage0_s, double later_stage_s) {
  auto p = MakeAnalyticProfile(name, manifest, 1e9, 0);
  if (!p.ok()) Die(p.status().ToString());
  v1::BatchProfile* b = p->mutable_batches(0);
  auto set = [](v1::PartLatency* part, double s) {
    part->set_median_s(s);
    part->set_p95_s(s);
    part->set_mean_s(s);
  };
  for (int s = 0; s < b->stages_size(); ++s)
    set(b->mutable_stages(s), s == 0 ? stage0_s : later_stage_s);
  for (int e = 0; e < b->exits_size(); ++e) set(b->mutable_exits(e), 0.0005);
  set(b->mutable_overhead(), 0);
  p->set_description("hand-made for the server tests");
  return *p;
}

struct Cleanup : public ::testing::Environment {
  void TearDown() override {
    std::error_code ec;
    if (!dir.empty()) std::filesystem::remove_all(dir, ec);
  }
  std::string dir;
};
Cleanup* const g_cleanup =
    static_cast<Cleanup*>(::testing::AddGlobalTestEnvironment(new Cleanup()));

struct Variants {
  std::map<std::string, v1::VariantManifest> by_id;
};
Variants* g_variants = nullptr;

}  // namespace

ServableOptions ServerFixture::Servables() const {
  ServableOptions o;
  o.repository = repository;
  o.load_model = load_model;
  return o;
}

std::vector<float> ServerFixture::Pixels(int i) const {
  std::vector<float> out(kImagePixels);
  for (int p = 0; p < kImagePixels; ++p) out[p] = image(i)[p] / 255.0f;
  return out;
}

v1::VariantManifest ServerFixture::Variant(const std::string& id) const {
  auto it = g_variants->by_id.find(id);
  if (it == g_variants->by_id.end()) Die("no fixture variant " + id);
  return it->second;
}

const ServerFixture& Fixture() {
  static const ServerFixture* fixture = [] {
    auto* f = new ServerFixture();
    std::string pattern =
        (std::filesystem::path(::testing::TempDir()) / "hapi-server-test-XXXXXX").string();
    std::vector<char> buffer(pattern.begin(), pattern.end());
    buffer.push_back('\0');
    if (::mkdtemp(buffer.data()) == nullptr) Die("mkdtemp " + pattern);
    f->repository = buffer.data();
    g_cleanup->dir = f->repository;

    const RepositoryLayout layout(f->repository);
    if (absl::Status st = MakeDirectories(layout.ModelsDir()); !st.ok()) Die(st.ToString());
    MakeFixtureModel(layout.ModelDir(kModelName), f);
    f->num_images = static_cast<int>(f->true_labels.size());
    auto loaded = f->load_model(layout.ModelDir(kModelName), ModelOptions());
    if (!loaded.ok()) Die(loaded.status().ToString());
    f->model = *std::move(loaded);

    const v1::ModelManifest& manifest = f->model->manifest();
    auto dev = MakeAnalyticProfile("dev", manifest, 1e9, 1e-6);
    if (!dev.ok()) Die(dev.status().ToString());
    const std::vector<std::pair<std::string, v1::DeviceProfile>> devices = {
        {"dev", *dev},
        {"slow", HandMadeProfile("slow", manifest, 0.010, 5.0)},
        {"glacial", HandMadeProfile("glacial", manifest, 100.0, 100.0)},
    };
    for (const auto& [name, profile] : devices) {
      WriteProto(layout.DeviceDir(name), kProfileFile, profile);
    }

    const int num_exits = manifest.exits_size();
    g_variants = new Variants();
    for (const v1::VariantManifest& v : {
             MakeVariant("v1", "dev", {0, 2}, MedianThresholds(*f, {0, 2}), num_exits),
             MakeVariant("v2", "dev", {1, 3}, MedianThresholds(*f, {1, 3}), num_exits),
             MakeVariant("deep", "slow", {0, 2}, {1.0f, 1.0f}, num_exits),
             MakeVariant("stuck", "glacial", {0}, {1.0f}, num_exits),
         }) {
      g_variants->by_id[v.id()] = v;
      WriteProto(layout.VariantDir(v.id()), kVariantFile, v);
    }
    return f;
  }();
  return *fixture;
}

void WriteCalibrationTables() {
  const ServerFixture& f = Fixture();
  const Model& model = *f.model;
  CalibrationTable table(f.num_images, model.num_exits(), model.num_classes());
  for (int i = 0; i < f.num_images; ++i) {
    absl::StatusOr<std::vector<ExitScores>> exits = RunAllExits(model, f.Pixels(i).data());
    if (!exits.ok()) Die(exits.status().ToString());
    table.SetTrueLabel(i, f.true_labels[i]);
    for (int e = 0; e < model.num_exits(); ++e) table.Set(e, i, (*exits)[e]);
  }
  const std::string dir = RepositoryLayout(f.repository).ModelDir(kModelName);
  const std::string bytes = table.Serialize();
  for (const char* file : {kValidationCalibrationFile, kTestCalibrationFile}) {
    if (absl::Status st = WriteFileAtomically(absl::StrCat(dir, "/", file), bytes); !st.ok()) {
      Die(st.ToString());
    }
  }
  v1::ModelManifest manifest = model.manifest();
  manifest.set_validation_calibration(kValidationCalibrationFile);
  manifest.set_test_calibration(kTestCalibrationFile);
  if (absl::Status st = WriteTextProtoAtomically(absl::StrCat(dir, "/", kManifestFile), manifest);
      !st.ok()) {
    Die(st.ToString());
  }
}

std::vector<uint8_t> ShiftedImage(int i) {
  const int bin = 1 + i % 9;
  return std::vector<uint8_t>(kImagePixels, static_cast<uint8_t>(255 * (bin / 10.0 + 0.002) + 1));
}

Design DesignOf(const v1::VariantManifest& variant) {
  Design d;
  d.exits.assign(variant.enabled_exits().begin(), variant.enabled_exits().end());
  d.thresholds.assign(variant.thresholds().begin(), variant.thresholds().end());
  auto policy = ParseExitPolicy(variant.exit_policy());
  if (!policy.ok()) Die(policy.status().ToString());
  d.policy = *policy;
  return d;
}

const SampleResult& Expected(const std::string& variant, int i) {
  static absl::Mutex mu;
  static auto* executors = new std::map<std::string, std::unique_ptr<EarlyExitExecutor>>();
  // The server's default model options; the fixture's model was loaded so.
  static auto* results = new std::map<std::pair<std::string, int>, SampleResult>();
  const ServerFixture& f = Fixture();
  absl::MutexLock lock(&mu);
  auto found = results->find({variant, i});
  if (found != results->end()) return found->second;
  std::unique_ptr<EarlyExitExecutor>& executor = (*executors)[variant];
  if (executor == nullptr) {
    auto created = EarlyExitExecutor::Create(f.model, DesignOf(f.Variant(variant)));
    if (!created.ok()) Die(created.status().ToString());
    executor = *std::move(created);
  }
  std::vector<float> pixels = f.Pixels(i);
  auto run = executor->Run(pixels.data(), 1);
  if (!run.ok() || run->size() != 1) Die("executor failed: " + run.status().ToString());
  return (*results)[{variant, i}] = (*run)[0];
}

v1::ClassifyRequest RawRequest(const uint8_t* image, const std::string& request_id) {
  v1::ClassifyRequest r;
  r.mutable_image()->set_raw_uint8(std::string(reinterpret_cast<const char*>(image), kImagePixels));
  r.set_request_id(request_id);
  return r;
}

std::string EncodePng(const uint8_t* pixels, int width, int height, int channels) {
  std::string out;
  auto append = [](void* context, void* data, int size) {
    static_cast<std::string*>(context)->append(static_cast<const char*>(data), size);
  };
  if (!stbi_write_png_to_func(append, &out, width, height, channels, pixels, width * channels)) {
    ADD_FAILURE() << "stbi_write_png_to_func failed";
  }
  return out;
}

TestServer::TestServer(TestServerOptions options) {
  InferenceServerOptions o;
  o.listen = "127.0.0.1:0";
  o.servables = Fixture().Servables();
  if (options.load_model) o.servables.load_model = options.load_model;
  o.variant = options.variant;
  o.batcher = options.batcher;
  o.monitor = options.monitor;
  o.service = options.service;
  if (options.max_receive_bytes > 0) o.max_message_bytes = options.max_receive_bytes;
  auto server = InferenceServer::Start(std::move(o));
  if (!server.ok()) Die(absl::StrCat("cannot start the test server: ", server.status().ToString()));
  server_ = *std::move(server);
  stub_ = v1::Inference::NewStub(NewChannel());
}

TestServer::~TestServer() {
  stub_.reset();
  server_.reset();
}

std::shared_ptr<grpc::Channel> TestServer::NewChannel() const {
  return grpc::CreateChannel(absl::StrCat("127.0.0.1:", port()),
                             grpc::InsecureChannelCredentials());
}

grpc::Status Classify(v1::Inference::Stub& stub, const v1::ClassifyRequest& request,
                      v1::ClassifyResponse* response, absl::Duration timeout) {
  grpc::ClientContext ctx;
  if (timeout != absl::InfiniteDuration())
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return stub.Classify(&ctx, request, response);
}

}  // namespace testing
}  // namespace hapi
