// hapi-client against models of other input shapes: the packing of grey test
// images for a model's input spec (client/input_packing.h), the variant
// list's certification columns (client/variant_summary.h), and the
// hapi-client binary's classify, bench and status against the real server
// in-process over the fake model made to eat 3x28x28 or 3x32x32 RGB, with
// Fashion-MNIST test images or an image folder's.
#include <cstdlib>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/input_packing.h"
#include "client/variant_summary.h"
#include "core/fake_model.h"
#include "core/fashion_mnist.h"
#include "core/files.h"
#include "core/image_decoder.h"
#include "core/image_folder.h"
#include "core/input_spec.h"
#include "core/model_metadata.h"
#include "core/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/grpc_status.h"
#include "stb_image_write.h"
#include "tests/server/server_fixture.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"

namespace hapi {
namespace testing {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::Not;

// --- packing ---------------------------------------------------------------

std::vector<uint8_t> Ramp(int height, int width) {
  std::vector<uint8_t> pixels(static_cast<size_t>(height) * width);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 13 % 256);
  return pixels;
}

TEST(InputPackingTest, ServedSpecDefaultsToTheDefaultModelsShape) {
  const v1::InputSpec legacy = client::ServedInputSpec(v1::ServingStatus());
  EXPECT_EQ(ShapeString(legacy), "1x28x28");
  v1::ServingStatus status;
  *status.mutable_input() = MakeInputSpec(3, 32, 24, 0.5f, 0.25f);
  EXPECT_EQ(ShapeString(client::ServedInputSpec(status)), "3x32x24");
  EXPECT_EQ(client::RawSampleBytes(client::ServedInputSpec(status)), 3 * 32 * 24);
  EXPECT_EQ(client::RawSampleBytes(legacy), kImagePixels);
}

TEST(InputPackingTest, DescribesShapeAndResizePolicy) {
  v1::InputSpec spec = MakeInputSpec(3, 32, 32, 0.5f, 0.25f);
  spec.set_resize(v1::InputSpec::RESIZE_CENTER_CROP);
  EXPECT_EQ(client::DescribeInputSpec(spec), "3x32x32 (RESIZE_CENTER_CROP)");
  EXPECT_EQ(client::DescribeInputSpec(MakeInputSpec(1, 28, 28, 0, 1)), "1x28x28 (RESIZE)");
}

TEST(InputPackingTest, ReplicatesTheGreyPlaneIntoEveryChannel) {
  const std::vector<uint8_t> plane = {1, 2, 3, 4};
  EXPECT_EQ(client::ReplicateChannels(plane.data(), 4, 1), std::string("\1\2\3\4"));
  EXPECT_EQ(client::ReplicateChannels(plane.data(), 4, 3), std::string("\1\2\3\4\1\2\3\4\1\2\3\4"));
}

// A model of the image's size gets a raw CHW tensor with its shape set, which
// the server decodes to the grey plane in every channel.
TEST(InputPackingTest, RawTensorWhenTheSizeIsTheModels) {
  const std::vector<uint8_t> grey = Ramp(28, 28);
  for (int channels : {1, 3}) {
    SCOPED_TRACE(channels);
    const v1::InputSpec spec = MakeInputSpec(channels, 28, 28, 0, 1);
    ASSERT_OK_AND_ASSIGN(v1::Image image, client::GrayImageFor(grey.data(), 28, 28, spec));
    ASSERT_TRUE(image.has_raw_uint8());
    EXPECT_EQ(image.channels(), channels);
    EXPECT_EQ(image.height(), 28);
    EXPECT_EQ(image.width(), 28);
    EXPECT_EQ(static_cast<int64_t>(image.raw_uint8().size()), client::RawSampleBytes(spec));
    ASSERT_OK_AND_ASSIGN(std::vector<float> decoded, DecodeImage(image, spec));
    ASSERT_EQ(decoded.size(), static_cast<size_t>(channels) * kImagePixels);
    for (int c = 0; c < channels; ++c) {
      for (int p = 0; p < kImagePixels; ++p) {
        ASSERT_FLOAT_EQ(decoded[static_cast<size_t>(c) * kImagePixels + p], grey[p] / 255.0f)
            << c << " " << p;
      }
    }
  }
}

// Another size: a grey PNG, converted by the server exactly as the same image
// sent as a raw 1-channel tensor would be for a grey model of that size, and
// replicated for an RGB one.
TEST(InputPackingTest, PngWhenTheSizeDiffers) {
  const std::vector<uint8_t> grey = Ramp(28, 28);
  v1::InputSpec rgb = MakeInputSpec(3, 32, 32, 0, 1);
  rgb.set_resize(v1::InputSpec::RESIZE_CENTER_CROP);
  ASSERT_OK_AND_ASSIGN(v1::Image image, client::GrayImageFor(grey.data(), 28, 28, rgb));
  ASSERT_TRUE(image.has_encoded());
  ASSERT_OK_AND_ASSIGN(std::vector<float> decoded, DecodeImage(image, rgb));
  ASSERT_EQ(decoded.size(), 3u * 32 * 32);

  v1::InputSpec gray = rgb;
  gray.set_channels(1);
  v1::Image raw;
  raw.set_raw_uint8(std::string(grey.begin(), grey.end()));
  raw.set_height(28);
  raw.set_width(28);
  ASSERT_OK_AND_ASSIGN(std::vector<float> plane, DecodeImage(raw, gray));
  ASSERT_EQ(plane.size(), 32u * 32);
  for (int c = 0; c < 3; ++c) {
    EXPECT_THAT(std::vector<float>(decoded.begin() + c * 1024, decoded.begin() + (c + 1) * 1024),
                ElementsAreArray(plane))
        << c;
  }
}

TEST(InputPackingTest, RefusesModelsOfOtherChannelCounts) {
  const std::vector<uint8_t> grey = Ramp(28, 28);
  v1::InputSpec spec = MakeInputSpec(1, 28, 28, 0, 1);
  spec.set_channels(4);
  EXPECT_THAT(client::GrayImageFor(grey.data(), 28, 28, spec).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("4 channels")));
  EXPECT_THAT(client::GrayImageFor(grey.data(), 0, 28, MakeInputSpec(1, 28, 28, 0, 1)).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// --- variants list -----------------------------------------------------------

v1::VariantManifest CertifiedVariant() {
  v1::VariantManifest v;
  v.set_id("v-p95");
  v.set_device("laptop");
  v.add_enabled_exits(0);
  v.add_enabled_exits(5);
  v.set_predicted_accuracy(0.9312);
  v.mutable_predicted_latency()->set_mean_ms(0.412);
  v.mutable_sla()->set_min_accuracy(0.92);
  v1::Certification* c = v.mutable_certification();
  c->set_certified(true);
  c->set_confidence(1 - 0.1 / 6);
  c->set_accuracy_lower(0.92456);
  c->set_accuracy_drop_upper(0.0031);
  c->set_statistic(v1::P95);
  c->set_latency_upper_ms(0.5304);
  c->set_note("candidate 2 certified");
  return v;
}

TEST(InputPackingTest, QuantizesADecodedImageToRawBytesOfTheModelsShape) {
  const v1::InputSpec spec = MakeInputSpec(3, 1, 2, 0.5f, 0.25f);
  const float chw[6] = {0.0f, 1.0f, 0.5f, 0.501f, 100 / 255.0f + 0.001f, 1.2f};
  const v1::Image image = client::QuantizedImageFor(chw, spec);
  EXPECT_EQ(image.channels(), 3);
  EXPECT_EQ(image.height(), 1);
  EXPECT_EQ(image.width(), 2);
  EXPECT_EQ(image.raw_uint8(), std::string({0, '\xff', '\x80', '\x80', 100, '\xff'}));
}

TEST(VariantSummaryTest, CertifiedAccuracyFloor) {
  const v1::VariantManifest v = CertifiedVariant();
  EXPECT_EQ(client::CertificationColumns(v), "certified  acc >= 92.46%  p95 <= 0.530 ms  at 98.3%");
  const std::string line = client::VariantLine(v);
  EXPECT_THAT(line,
              AllOf(HasSubstr("v-p95"), HasSubstr("fp32 exits [0,5] acc 93.12% mean 0.412 ms  "
                                                  "certified  acc >= 92.46%")));
  EXPECT_THAT(line, Not(HasSubstr("candidate 2")));
}

TEST(VariantSummaryTest, MaxDropSlaAndTheNoteWhenNotCertified) {
  v1::VariantManifest v = CertifiedVariant();
  v.mutable_sla()->set_use_accuracy_drop(true);
  v.mutable_sla()->set_max_accuracy_drop(0.005);
  v1::Certification* c = v.mutable_certification();
  c->set_certified(false);
  c->set_confidence(0.9);
  c->set_accuracy_drop_upper(0.0071);
  c->set_statistic(v1::MEAN);
  c->set_latency_upper_ms(0.8);
  c->set_note("no candidate certified: the full network");
  EXPECT_EQ(client::CertificationColumns(v),
            "NOT certified  drop <= 0.71 pts  mean <= 0.800 ms  at 90.0%  (no candidate "
            "certified: the full network)");
  v.clear_certification();
  EXPECT_EQ(client::CertificationColumns(v), "no certification");
}

// --- the binary against RGB models -------------------------------------------

// The fixture's fake model made to eat channels x side x side, resized with
// `resize`. The fake reads the mean pixel, so a grey image replicated into
// three channels gets the grey model's answer.
ModelLoader ShapedFakeLoader(int channels, int side, v1::InputSpec::Resize resize) {
  return [=](const std::string& model_dir,
             const ModelOptions&) -> absl::StatusOr<std::shared_ptr<const Model>> {
    v1::ModelManifest manifest;
    HAPI_RETURN_IF_ERROR(ReadTextProto(absl::StrCat(model_dir, "/", kManifestFile), &manifest));
    *manifest.mutable_input() = MakeInputSpec(channels, side, side, 0.0f, 1.0f);
    manifest.mutable_input()->set_resize(resize);
    for (v1::StageInfo& stage : *manifest.mutable_stages()) {
      *stage.mutable_output() = InputShape(manifest.input());
    }
    return MakeFakeModel(manifest);
  };
}

TestServerOptions Shaped(int channels, int side, v1::InputSpec::Resize resize) {
  TestServerOptions options;
  options.load_model = ShapedFakeLoader(channels, side, resize);
  return options;
}

int Shell(const std::string& command) {
  const int rc = std::system(command.c_str());
  return rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string BigEndian(uint32_t v) {
  return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                     static_cast<char>(v >> 8), static_cast<char>(v)};
}

// A Fashion-MNIST directory whose test split is the fixture's first `n` images
// and labels (uncompressed IDX under the .gz names, which the loader reads as
// they are), with a blank training set just large enough to split.
void WriteIdxDirectory(const std::string& dir, int n) {
  const ServerFixture& f = Fixture();
  auto images = [](int count, const uint8_t* pixels) {
    std::string out = BigEndian(2051) + BigEndian(count) + BigEndian(28) + BigEndian(28);
    if (pixels == nullptr) return out + std::string(static_cast<size_t>(count) * kImagePixels, 0);
    return out + std::string(reinterpret_cast<const char*>(pixels),
                             static_cast<size_t>(count) * kImagePixels);
  };
  auto labels = [](int count, const int* values) {
    std::string out = BigEndian(2049) + BigEndian(count);
    for (int i = 0; i < count; ++i) out += static_cast<char>(values == nullptr ? 0 : values[i]);
    return out;
  };
  const int train = kValidationSize + 1;
  WriteBytes(dir + "/train-images-idx3-ubyte.gz", images(train, nullptr));
  WriteBytes(dir + "/train-labels-idx1-ubyte.gz", labels(train, nullptr));
  WriteBytes(dir + "/t10k-images-idx3-ubyte.gz", images(n, f.images.data()));
  WriteBytes(dir + "/t10k-labels-idx1-ubyte.gz", labels(n, f.true_labels.data()));
}

struct Answer {
  int label = -1, exit = -1;
  bool operator==(const Answer& o) const { return label == o.label && exit == o.exit; }
};
std::ostream& operator<<(std::ostream& os, const Answer& a) {
  return os << "label " << a.label << " exit " << a.exit;
}

// test[i] -> answer, from classify's text output (either protocol).
std::map<int, Answer> ParseAnswers(const std::string& out) {
  std::map<int, Answer> answers;
  static const std::regex hapi(R"(test\[(\d+)\]  \S+ \((\d+)\)  confidence \S+  exit (\d+))");
  static const std::regex oip(R"(test\[(\d+)\]  label (\d+)  confidence \S+  exit (\d+))");
  for (const std::regex* re : {&hapi, &oip}) {
    for (auto it = std::sregex_iterator(out.begin(), out.end(), *re); it != std::sregex_iterator();
         ++it) {
      answers[std::stoi((*it)[1])] = {std::stoi((*it)[2]), std::stoi((*it)[3])};
    }
  }
  return answers;
}

Answer AnswerTo(TestServer& server, const v1::ClassifyRequest& request) {
  v1::ClassifyResponse r;
  EXPECT_OK(FromGrpcStatus(Classify(server.stub(), request, &r)));
  return {r.label(), r.exit().exit_index()};
}

class ClientBinaryTest : public ::testing::Test {
 protected:
  static constexpr int kImages = 24;
  void SetUp() override { WriteIdxDirectory(data_.path(), kImages); }

  // Runs hapi-client against `server`; its exit status, and its stdout and
  // stderr in `out`.
  int Client(const TestServer& server, const std::string& args, std::string* out) {
    const std::string file = tmp_.Join("out.txt");
    const int rc = Shell(absl::StrCat(HAPI_CLIENT_BINARY, " --target 127.0.0.1:", server.port(),
                                      " --timeout 30 --data_dir ", data_.path(), " ", args, " > ",
                                      file, " 2>&1"));
    *out = ReadBytes(file);
    return rc;
  }

  // classify --idx over both protocols: every image answered, the same
  // answers both ways.
  std::map<int, Answer> ClassifyIdx(const TestServer& server) {
    std::map<int, Answer> answers;
    for (const char* protocol : {"hapi", "oip"}) {
      SCOPED_TRACE(protocol);
      std::string out;
      EXPECT_EQ(
          Client(server, absl::StrCat("classify --idx ", kImages, " --protocol ", protocol), &out),
          0)
          << out;
      const std::map<int, Answer> parsed = ParseAnswers(out);
      EXPECT_EQ(parsed.size(), static_cast<size_t>(kImages)) << out;
      EXPECT_THAT(out, HasSubstr(absl::StrCat("/", kImages, ")")));  // accuracy x% (k/24)
      if (answers.empty()) {
        answers = parsed;
      } else {
        EXPECT_EQ(parsed, answers) << out;
      }
    }
    return answers;
  }

  // bench over both protocols: every request OK.
  void Bench(const TestServer& server, const std::string& expect_sending) {
    for (const char* protocol : {"hapi", "oip"}) {
      SCOPED_TRACE(protocol);
      std::string out;
      EXPECT_EQ(Client(server,
                       absl::StrCat("bench --count 12 --concurrency 2 --batch 2 --no_progress "
                                    "--images ",
                                    kImages, " --protocol ", protocol),
                       &out),
                0)
          << out;
      EXPECT_THAT(out, AllOf(HasSubstr("codes: OK=24"), HasSubstr(expect_sending)));
    }
  }

  ScopedTempDir tmp_, data_;
};

// The grey test images go to a 3x28x28 model as raw 3-channel tensors, and
// get the grey model's answers (the fake reads the mean pixel).
TEST_F(ClientBinaryTest, ClassifiesRawTensorsWithAThreeChannelModel) {
  TestServer rgb(Shaped(3, 28, v1::InputSpec::RESIZE));
  TestServer gray;
  const std::map<int, Answer> answers = ClassifyIdx(rgb);
  for (int i = 0; i < kImages; ++i) {
    EXPECT_EQ(answers.at(i), AnswerTo(gray, RawRequest(Fixture().image(i)))) << i;
  }
  std::string out;
  EXPECT_EQ(Client(rgb, "status", &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("input 3x28x28 (RESIZE)\n"));
  Bench(rgb, "sending raw 3x28x28 uint8 tensors");
}

// A 3x32x32 centre-cropped model: the 28x28 test images go as PNG, which the
// server resizes and replicates; the answers are the server's own for those
// PNGs.
TEST_F(ClientBinaryTest, SendsPngsToAModelOfAnotherSize) {
  TestServer rgb(Shaped(3, 32, v1::InputSpec::RESIZE_CENTER_CROP));
  const std::map<int, Answer> answers = ClassifyIdx(rgb);
  for (int i = 0; i < kImages; ++i) {
    v1::ClassifyRequest request;
    request.mutable_image()->set_encoded(EncodePng(Fixture().image(i), 28, 28, 1));
    EXPECT_EQ(answers.at(i), AnswerTo(rgb, request)) << i;
  }
  std::string out;
  EXPECT_EQ(Client(rgb, "status", &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("input 3x32x32 (RESIZE_CENTER_CROP)\n"));
  Bench(rgb, "sending PNG images");
}

// The default shape: raw 1x28x28 tensors, as before.
TEST_F(ClientBinaryTest, GreyModelStillGetsRawTensors) {
  TestServer gray;
  const std::map<int, Answer> answers = ClassifyIdx(gray);
  for (int i = 0; i < kImages; ++i) {
    EXPECT_EQ(answers.at(i), AnswerTo(gray, RawRequest(Fixture().image(i)))) << i;
  }
  Bench(gray, "sending raw 1x28x28 uint8 tensors");
}

// An image folder's test split (RGB PNG and JPEG of another size than the
// model's) goes to a 3x32x32 centre-cropped model as raw tensors decoded by
// the client; the answers are the server's for those tensors, over both
// protocols. A bad image stops the client naming it, or is skipped.
TEST_F(ClientBinaryTest, ClassifiesAndBenchesAnImageFolder) {
  TestServer rgb(Shaped(3, 32, v1::InputSpec::RESIZE_CENTER_CROP));
  const std::string folder = tmp_.Join("photos");
  for (const char* split : {"train", "test"}) {
    for (int c = 0; c < 3; ++c) {
      for (int i = 0; i < 4; ++i) {
        std::vector<uint8_t> pixels(40 * 30 * 3);
        for (size_t k = 0; k < pixels.size(); ++k) {
          pixels[k] = static_cast<uint8_t>((k * 7 + c * 90 + i * 30) % 256);
        }
        const std::string dir = absl::StrCat(folder, "/", split, "/class", c);
        ASSERT_OK(MakeDirectories(dir));
        const std::string stem = absl::StrCat(dir, "/", i);
        ASSERT_TRUE(i % 2 == 0
                        ? stbi_write_png((stem + ".png").c_str(), 40, 30, 3, pixels.data(), 120)
                        : stbi_write_jpg((stem + ".jpg").c_str(), 40, 30, 3, pixels.data(), 90));
      }
    }
  }
  v1::InputSpec spec = MakeInputSpec(3, 32, 32, 0.0f, 1.0f);  // the served model's
  spec.set_resize(v1::InputSpec::RESIZE_CENTER_CROP);
  ImageFolderOptions options;
  options.progress = false;
  options.decode[0] = options.decode[1] = false;
  ASSERT_OK_AND_ASSIGN(const ImageFolderDataset data, LoadImageFolder(folder, spec, options));
  ASSERT_EQ(data.test.size(), 12);

  static const std::regex hapi(R"((test/\S+)  \S+ \((\d+)\)  confidence \S+  exit (\d+))");
  static const std::regex oip(R"((test/\S+)  label (\d+)  confidence \S+  exit (\d+))");
  for (const char* protocol : {"hapi", "oip"}) {
    SCOPED_TRACE(protocol);
    std::string out;
    ASSERT_EQ(
        Client(rgb, absl::StrCat("classify --image_folder ", folder, " --protocol ", protocol),
               &out),
        0)
        << out;
    EXPECT_THAT(
        out,
        AllOf(HasSubstr("3 classes, split folders: train "), HasSubstr(", test 12 images"),
              HasSubstr("sending its test split as raw 3x32x32 uint8 tensors"), HasSubstr("/12)")));
    std::map<std::string, Answer> answers;
    const std::regex& re = std::string(protocol) == "hapi" ? hapi : oip;
    for (auto it = std::sregex_iterator(out.begin(), out.end(), re); it != std::sregex_iterator();
         ++it) {
      answers[(*it)[1]] = {std::stoi((*it)[2]), std::stoi((*it)[3])};
    }
    ASSERT_EQ(answers.size(), 12u) << out;
    for (int i = 0; i < data.test.size(); ++i) {
      v1::ClassifyRequest request;
      *request.mutable_image() = client::QuantizedImageFor(data.test.image(i), spec);
      EXPECT_EQ(answers.at(data.test.paths[i]), AnswerTo(rgb, request)) << data.test.paths[i];
    }

    EXPECT_EQ(Client(rgb,
                     absl::StrCat("bench --count 6 --concurrency 2 --batch 2 --no_progress "
                                  "--image_folder ",
                                  folder, " --split train --images 5 --protocol ", protocol),
                     &out),
              0)
        << out;
    EXPECT_THAT(out, AllOf(HasSubstr("(5 decoded)"), HasSubstr("codes: OK=12"),
                           HasSubstr("sending raw 3x32x32 uint8 tensors")));
  }

  std::string out;
  EXPECT_EQ(Client(rgb, absl::StrCat("classify --image_folder ", folder, " --split dev"), &out), 2);
  EXPECT_THAT(out, HasSubstr("--split: split 'dev' must be train, val or test")) << out;
  WriteBytes(folder + "/test/class1/broken.png", "\x89PNG\r\n\x1a\n truncated");
  EXPECT_EQ(Client(rgb, absl::StrCat("classify --image_folder ", folder), &out), 1);
  EXPECT_THAT(out, HasSubstr(absl::StrCat("bad image ", folder, "/test/class1/broken.png"))) << out;
  EXPECT_EQ(Client(rgb, absl::StrCat("classify --skip_bad_images --image_folder ", folder), &out),
            0)
      << out;
  EXPECT_THAT(
      out, AllOf(HasSubstr("1 bad images skipped (test/class1/broken.png: "), HasSubstr("/12)")));
}

// --model reaches the server: in ClassifyRequest.model (classify, progressive,
// bench), ServingStatusRequest.model (status, the input-spec lookup) and
// LoadVariantRequest.model. The fixture serves one model, "tiny", which may be
// named or left unnamed; another name is the server's NOT_FOUND.
TEST_F(ClientBinaryTest, ModelOptionReachesTheServer) {
  TestServer server;
  const std::string png = tmp_.Join("0_0.png");
  WriteBytes(png, EncodePng(Fixture().image(0), 28, 28, 1));
  std::string out;
  for (const std::string& command :
       {absl::StrCat("classify ", png), absl::StrCat("classify --progressive ", png),
        std::string("classify --idx 4"), std::string("bench --count 4 --no_progress --images 4"),
        std::string("status")}) {
    SCOPED_TRACE(command);
    EXPECT_EQ(Client(server, absl::StrCat(command, " --model ", kModelName), &out), 0) << out;
    EXPECT_EQ(Client(server, absl::StrCat(command, " --model nope"), &out), 1) << out;
    EXPECT_THAT(out, AllOf(HasSubstr("NOT_FOUND"), HasSubstr("nope"))) << out;
  }
  EXPECT_EQ(Client(server, "status --model tiny", &out), 0) << out;
  EXPECT_THAT(out, AllOf(HasSubstr("input 1x28x28 (RESIZE)\n"), HasSubstr("model: \"tiny\"")));
  EXPECT_EQ(Client(server, "load-variant v2 --model nope", &out), 1) << out;
  EXPECT_THAT(out, HasSubstr("load variant: ")) << out;
  EXPECT_EQ(Client(server, "load-variant v2 --model tiny", &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("variant: \"v2\"")) << out;
}

}  // namespace
}  // namespace testing
}  // namespace hapi
