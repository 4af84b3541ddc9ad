// LoadImageFolder on folders written here (PNG and JPEG by stb_image_write):
// both layouts, the fixed split, colour and size by the input spec, and every
// refusal the loader documents (core/image_folder.h).
#include "core/image_folder.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/files.h"
#include "core/image_decoder.h"
#include "core/input_spec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "stb_image_write.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"

namespace hapi {
namespace {

namespace fs = std::filesystem;
using ::hapi::testing::IsOk;
using ::hapi::testing::ScopedTempDir;
using ::hapi::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// A width x height image of `channels` (1 or 3) all of one colour.
std::vector<uint8_t> Solid(int width, int height, int channels, std::vector<uint8_t> colour) {
  std::vector<uint8_t> pixels;
  for (int i = 0; i < width * height; ++i) {
    pixels.insert(pixels.end(), colour.begin(), colour.begin() + channels);
  }
  return pixels;
}

void WritePng(const std::string& path, int width, int height, int channels,
              const std::vector<uint8_t>& pixels) {
  fs::create_directories(fs::path(path).parent_path());
  ASSERT_TRUE(
      stbi_write_png(path.c_str(), width, height, channels, pixels.data(), width * channels))
      << path;
}

void WriteJpeg(const std::string& path, int width, int height, int channels,
               const std::vector<uint8_t>& pixels) {
  fs::create_directories(fs::path(path).parent_path());
  ASSERT_TRUE(stbi_write_jpg(path.c_str(), width, height, channels, pixels.data(), 95)) << path;
}

void WriteText(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

// `per_class` images in each class folder under `dir`, alternately PNG and
// JPEG, RGB, 6x6, each class its own colour.
void WriteClasses(const std::string& dir, const std::vector<std::string>& classes, int per_class) {
  for (size_t c = 0; c < classes.size(); ++c) {
    const std::vector<uint8_t> pixels =
        Solid(6, 6, 3, {static_cast<uint8_t>(40 * c), 200, static_cast<uint8_t>(255 - 40 * c)});
    for (int i = 0; i < per_class; ++i) {
      const std::string stem = absl::StrCat(dir, "/", classes[c], "/img", i);
      if (i % 2 == 0) {
        WritePng(stem + ".png", 6, 6, 3, pixels);
      } else {
        WriteJpeg(stem + ".JPG", 6, 6, 3, pixels);
      }
    }
  }
}

v1::InputSpec RgbSpec(int side = 4) { return MakeInputSpec(3, side, side, 0.5f, 0.25f); }
v1::InputSpec GraySpec(int side = 4) { return MakeInputSpec(1, side, side, 0.0f, 1.0f); }

ImageFolderOptions Quiet() {
  ImageFolderOptions o;
  o.progress = false;
  return o;
}

// The class folder of a path relative to the root: its last folder.
std::string ClassOf(const std::string& path) {
  return fs::path(path).parent_path().filename().string();
}

TEST(ImageFolderTest, ClassFoldersSplitByAFixedSeedDisjointAndComplete) {
  ScopedTempDir dir;
  WriteClasses(dir.path(), {"dog", "cat", "bird"}, 40);
  ASSERT_OK_AND_ASSIGN(ImageFolderDataset a, LoadImageFolder(dir.path(), RgbSpec(), Quiet()));
  ASSERT_OK_AND_ASSIGN(ImageFolderDataset b, LoadImageFolder(dir.path(), RgbSpec(), Quiet()));
  EXPECT_EQ(a.layout, ImageFolderLayout::kClassFolders);
  EXPECT_THAT(a.class_names, ElementsAre("bird", "cat", "dog"));  // byte order
  std::set<std::string> all;
  size_t total = 0;
  for (DataSplit s : {DataSplit::kTrain, DataSplit::kValidation, DataSplit::kTest}) {
    const ImageSplit& split = a.split(s);
    EXPECT_EQ(split.paths, b.split(s).paths) << DataSplitName(s);  // the same split every run
    EXPECT_EQ(split.images, b.split(s).images);
    EXPECT_GT(split.size(), 0) << DataSplitName(s);
    EXPECT_EQ(split.listed, split.size());
    EXPECT_EQ(split.images.size(), static_cast<size_t>(split.size()) * 3 * 4 * 4);
    EXPECT_TRUE(std::is_sorted(split.paths.begin(), split.paths.end()));  // traversal order
    for (int i = 0; i < split.size(); ++i) {
      EXPECT_EQ(a.class_names[split.labels[i]], ClassOf(split.paths[i])) << split.paths[i];
    }
    all.insert(split.paths.begin(), split.paths.end());
    total += split.paths.size();
  }
  EXPECT_EQ(total, 120u);
  EXPECT_EQ(all.size(), 120u);  // disjoint and complete
  // 10% + 10% expected: 24 of 120, within a generous binomial margin.
  EXPECT_GE(a.validation.size() + a.test.size(), 8);
  EXPECT_LE(a.validation.size() + a.test.size(), 45);

  // Another seed, another split; an added image moves no other.
  ImageFolderOptions other = Quiet();
  other.split_seed = 7;
  ASSERT_OK_AND_ASSIGN(ImageFolderDataset c, LoadImageFolder(dir.path(), RgbSpec(), other));
  EXPECT_NE(c.test.paths, a.test.paths);
  WritePng(dir.Join("cat/zzz-new.png"), 6, 6, 3, Solid(6, 6, 3, {1, 2, 3}));
  ASSERT_OK_AND_ASSIGN(ImageFolderDataset d, LoadImageFolder(dir.path(), RgbSpec(), Quiet()));
  for (DataSplit s : {DataSplit::kTrain, DataSplit::kValidation, DataSplit::kTest}) {
    std::vector<std::string> kept = d.split(s).paths;
    kept.erase(std::remove(kept.begin(), kept.end(), "cat/zzz-new.png"), kept.end());
    EXPECT_EQ(kept, a.split(s).paths) << DataSplitName(s);
  }
}

TEST(ImageFolderTest, SplitFoldersAsGiven) {
  ScopedTempDir dir;
  WriteClasses(dir.Join("train"), {"a", "b"}, 6);
  WriteClasses(dir.Join("val"), {"a", "b"}, 2);
  WriteClasses(dir.Join("test"), {"a", "b"}, 3);
  ASSERT_OK_AND_ASSIGN(ImageFolderDataset data, LoadImageFolder(dir.path(), RgbSpec(), Quiet()));
  EXPECT_EQ(data.layout, ImageFolderLayout::kSplitFolders);
  EXPECT_THAT(data.class_names, ElementsAre("a", "b"));
  EXPECT_EQ(data.train.size(), 12);
  EXPECT_EQ(data.validation.size(), 4);
  EXPECT_EQ(data.test.size(), 6);
  EXPECT_EQ(data.test.paths[0], "test/a/img0.png");
  EXPECT_EQ(data.test.labels, (std::vector<int>{0, 0, 0, 1, 1, 1}));
  for (const std::string& p : data.validation.paths) EXPECT_EQ(p.rfind("val/", 0), 0u) << p;
}

TEST(ImageFolderTest, MissingValidationFolderIsCarvedOutOfTrain) {
  ScopedTempDir dir;
  WriteClasses(dir.Join("train"), {"a", "b"}, 30);
  WriteClasses(dir.Join("test"), {"a", "b"}, 2);
  ImageFolderOptions options = Quiet();
  options.validation_fraction = 0.3;
  ASSERT_OK_AND_ASSIGN(ImageFolderDataset data, LoadImageFolder(dir.path(), RgbSpec(), options));
  EXPECT_EQ(data.test.size(), 4);  // the folder's, nothing carved
  EXPECT_GT(data.validation.size(), 0);
  EXPECT_EQ(data.train.size() + data.validation.size(), 60);
  for (const std::string& p : data.validation.paths) EXPECT_EQ(p.rfind("train/", 0), 0u) << p;
}

TEST(ImageFolderTest, OnlyTheSplitsAskedForAreDecoded) {
  ScopedTempDir dir;
  WriteClasses(dir.path(), {"a", "b", "c"}, 20);
  ImageFolderOptions options = Quiet();
  options.decode[static_cast<int>(DataSplit::kTrain)] = false;
  options.decode[static_cast<int>(DataSplit::kValidation)] = false;
  ASSERT_OK_AND_ASSIGN(ImageFolderDataset data, LoadImageFolder(dir.path(), RgbSpec(), options));
  EXPECT_EQ(data.train.size(), 0);
  EXPECT_GT(data.train.listed, 0);
  EXPECT_GT(data.test.size(), 0);
  EXPECT_EQ(data.train.listed + data.validation.listed + data.test.listed, 60);
  EXPECT_THAT(DescribeImageFolder(data), HasSubstr("3 classes, class folders: train "));
}

TEST(ImageFolderTest, MaxPerSplitSamplesAcrossClassesDeterministically) {
  ScopedTempDir dir;
  WriteClasses(dir.path(), {"a", "b", "c", "d"}, 10);
  ImageFolderOptions options = Quiet();
  options.validation_fraction = 0;
  options.test_fraction = 0;
  options.max_per_split = 12;
  ASSERT_OK_AND_ASSIGN(ImageFolderDataset a, LoadImageFolder(dir.path(), RgbSpec(), options));
  ASSERT_OK_AND_ASSIGN(ImageFolderDataset b, LoadImageFolder(dir.path(), RgbSpec(), options));
  EXPECT_EQ(a.train.size(), 12);
  EXPECT_EQ(a.train.listed, 40);
  EXPECT_EQ(a.train.paths, b.train.paths);
  EXPECT_TRUE(std::is_sorted(a.train.paths.begin(), a.train.paths.end()));
  EXPECT_GE(std::set<int>(a.train.labels.begin(), a.train.labels.end()).size(), 3u);
}

TEST(ImageFolderTest, GrayImagesBecomeRgbAndRgbBecomesLumaAsTheSpecSays) {
  ScopedTempDir dir;
  WritePng(dir.Join("grey/g.png"), 4, 4, 1, Solid(4, 4, 1, {100}));
  WritePng(dir.Join("red/r.png"), 4, 4, 3, Solid(4, 4, 3, {255, 0, 0}));
  ImageFolderOptions options = Quiet();
  options.validation_fraction = 0;
  options.test_fraction = 0;
  options.decode[1] = options.decode[2] = false;

  ASSERT_OK_AND_ASSIGN(ImageFolderDataset rgb, LoadImageFolder(dir.path(), RgbSpec(), options));
  ASSERT_EQ(rgb.train.size(), 2);
  ASSERT_EQ(rgb.train.paths[0], "grey/g.png");
  for (int k = 0; k < 3 * 16; ++k) EXPECT_FLOAT_EQ(rgb.train.image(0)[k], 100 / 255.0f) << k;
  for (int k = 0; k < 16; ++k) {
    EXPECT_FLOAT_EQ(rgb.train.image(1)[k], 1.0f);       // R
    EXPECT_FLOAT_EQ(rgb.train.image(1)[16 + k], 0.0f);  // G
    EXPECT_FLOAT_EQ(rgb.train.image(1)[32 + k], 0.0f);  // B
  }
  ASSERT_OK_AND_ASSIGN(ImageFolderDataset grey, LoadImageFolder(dir.path(), GraySpec(), options));
  ASSERT_EQ(grey.train.image_floats(), 16);
  for (int k = 0; k < 16; ++k) {
    EXPECT_FLOAT_EQ(grey.train.image(0)[k], 100 / 255.0f);
    EXPECT_FLOAT_EQ(grey.train.image(1)[k], ((255 * 77) >> 8) / 255.0f);  // BT.601 luma of red
  }
}

TEST(ImageFolderTest, FilesDecodeExactlyAsTheServerDecodesThem) {
  ScopedTempDir dir;
  std::vector<uint8_t> pixels(9 * 7 * 3);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 37);
  WriteJpeg(dir.Join("x/a.jpeg"), 9, 7, 3, pixels);
  WritePng(dir.Join("x/b.png"), 9, 7, 3, pixels);
  ImageFolderOptions options = Quiet();
  options.validation_fraction = options.test_fraction = 0;
  options.decode[1] = options.decode[2] = false;
  for (v1::InputSpec spec : {RgbSpec(5), GraySpec(8)}) {
    spec.set_resize(v1::InputSpec::RESIZE_CENTER_CROP);
    ASSERT_OK_AND_ASSIGN(ImageFolderDataset data, LoadImageFolder(dir.path(), spec, options));
    for (int i = 0; i < data.train.size(); ++i) {
      ASSERT_OK_AND_ASSIGN(std::string bytes, ReadFile(dir.Join(data.train.paths[i])));
      ASSERT_OK_AND_ASSIGN(std::vector<float> expected, DecodeEncodedImage(bytes, spec));
      EXPECT_EQ(
          std::vector<float>(data.train.image(i), data.train.image(i) + data.train.image_floats()),
          expected)
          << data.train.paths[i];
    }
  }
}

TEST(ImageFolderTest, ResizeScalesTheWholeImageAndCentreCropKeepsTheCentre) {
  // 12x4: black, white, black bands of 4 columns each.
  std::vector<uint8_t> pixels(12 * 4, 0);
  for (int y = 0; y < 4; ++y) {
    for (int x = 4; x < 8; ++x) pixels[y * 12 + x] = 255;
  }
  ScopedTempDir dir;
  WritePng(dir.Join("bands/b.png"), 12, 4, 1, pixels);
  ImageFolderOptions options = Quiet();
  options.validation_fraction = options.test_fraction = 0;
  options.decode[1] = options.decode[2] = false;
  // RESIZE to 4x6 (height x width): the bands squeezed in, side by side.
  v1::InputSpec spec = MakeInputSpec(1, 4, 6, 0.0f, 1.0f);
  ASSERT_OK_AND_ASSIGN(ImageFolderDataset resized, LoadImageFolder(dir.path(), spec, options));
  const float* r = resized.train.image(0);
  EXPECT_LT(r[0], 0.1f);
  EXPECT_GT(r[2], 0.8f);  // the white band, its edges softened by the filter
  EXPECT_GT(r[3], 0.8f);
  EXPECT_LT(r[5], 0.1f);
  // RESIZE_CENTER_CROP to 4x4: the centre 4x4 of the image, all white.
  spec = GraySpec(4);
  spec.set_resize(v1::InputSpec::RESIZE_CENTER_CROP);
  ASSERT_OK_AND_ASSIGN(ImageFolderDataset cropped, LoadImageFolder(dir.path(), spec, options));
  for (int k = 0; k < 16; ++k) EXPECT_GT(cropped.train.image(0)[k], 0.9f) << k;  // all centre
}

TEST(ImageFolderTest, ACorruptImageIsAnErrorNamingItOrSkippedAndListed) {
  ScopedTempDir dir;
  WriteClasses(dir.path(), {"a", "b"}, 4);
  ASSERT_OK_AND_ASSIGN(std::string png, ReadFile(dir.Join("a/img0.png")));
  WriteText(dir.Join("a/img9.png"), png.substr(0, png.size() / 2));  // truncated
  WriteText(dir.Join("b/text.jpg"), "not an image at all");          // no signature
  ImageFolderOptions options = Quiet();
  options.validation_fraction = options.test_fraction = 0;
  EXPECT_THAT(LoadImageFolder(dir.path(), RgbSpec(), options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(dir.Join("a/img9.png")), HasSubstr("PNG"))));
  options.bad_images = BadImagePolicy::kSkip;
  ASSERT_OK_AND_ASSIGN(ImageFolderDataset data, LoadImageFolder(dir.path(), RgbSpec(), options));
  EXPECT_EQ(data.train.size(), 8);
  EXPECT_EQ(data.train.listed, 10);
  ASSERT_EQ(data.skipped.size(), 2u);
  EXPECT_EQ(data.skipped[0].path, "a/img9.png");
  EXPECT_EQ(data.skipped[1].path, "b/text.jpg");
  EXPECT_THAT(data.skipped[1].reason, HasSubstr("not a PNG or JPEG"));
  EXPECT_THAT(DescribeImageFolder(data), HasSubstr("2 bad images skipped (a/img9.png: "));
}

TEST(ImageFolderTest, AnUnreadableImageIsAnErrorNamingItOrSkipped) {
  ScopedTempDir dir;
  WriteClasses(dir.path(), {"a", "b"}, 2);
  fs::create_symlink(dir.Join("nowhere.png"), dir.Join("a/dangling.png"));
  ImageFolderOptions options = Quiet();
  options.validation_fraction = options.test_fraction = 0;
  EXPECT_THAT(LoadImageFolder(dir.path(), RgbSpec(), options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(dir.Join("a/dangling.png")), HasSubstr("dangling"))));
  options.bad_images = BadImagePolicy::kSkip;
  ASSERT_OK_AND_ASSIGN(ImageFolderDataset data, LoadImageFolder(dir.path(), RgbSpec(), options));
  EXPECT_EQ(data.train.size(), 4);
  ASSERT_EQ(data.skipped.size(), 1u);
  EXPECT_EQ(data.skipped[0].path, "a/dangling.png");
}

TEST(ImageFolderTest, AFileWithoutReadPermissionIsAnErrorNamingIt) {
  if (::geteuid() == 0) GTEST_SKIP() << "root reads files whatever their mode";
  ScopedTempDir dir;
  WriteClasses(dir.path(), {"a", "b"}, 2);
  ASSERT_EQ(::chmod(dir.Join("b/img0.png").c_str(), 0), 0);
  ImageFolderOptions options = Quiet();
  options.validation_fraction = options.test_fraction = 0;
  EXPECT_THAT(LoadImageFolder(dir.path(), RgbSpec(), options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(dir.Join("b/img0.png")), HasSubstr("Permission denied"))));
}

TEST(ImageFolderTest, EntriesThatAreNotImagesAreIgnoredAndCounted) {
  ScopedTempDir dir;
  WriteClasses(dir.path(), {"a", "b"}, 2);
  WriteText(dir.Join("README.md"), "about the data");
  WriteText(dir.Join("a/labels.csv"), "x");
  WriteText(dir.Join("a/.hidden.png"), "x");
  WriteClasses(dir.Join("b"), {"nested"}, 1);  // a subfolder of a class: not walked
  fs::create_directories(dir.Join(".git/objects"));
  ImageFolderOptions options = Quiet();
  options.validation_fraction = options.test_fraction = 0;
  ASSERT_OK_AND_ASSIGN(ImageFolderDataset data, LoadImageFolder(dir.path(), RgbSpec(), options));
  EXPECT_THAT(data.class_names, ElementsAre("a", "b"));
  EXPECT_EQ(data.train.size(), 4);
  EXPECT_EQ(data.ignored, 5);
  EXPECT_THAT(data.ignored_examples,
              ElementsAre(".git", "README.md", "a/.hidden.png", "a/labels.csv", "b/nested"));
}

TEST(ImageFolderTest, AnEmptyClassFolderIsAnErrorNamingIt) {
  ScopedTempDir dir;
  WriteClasses(dir.path(), {"a", "b"}, 2);
  fs::create_directories(dir.Join("c"));
  WriteText(dir.Join("c/notes.txt"), "no images here");
  EXPECT_THAT(LoadImageFolder(dir.path(), RgbSpec(), Quiet()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(dir.Join("c")), HasSubstr("no image files"))));
}

TEST(ImageFolderTest, SplitsWithDifferentClassesAreAnErrorNamingSplitAndClass) {
  ScopedTempDir dir;
  WriteClasses(dir.Join("train"), {"a", "b", "c"}, 2);
  WriteClasses(dir.Join("test"), {"a", "b"}, 2);
  EXPECT_THAT(LoadImageFolder(dir.path(), RgbSpec(), Quiet()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(dir.Join("test")), HasSubstr("no class folder 'c'"),
                             HasSubstr("train/ has it"))));
  WriteClasses(dir.Join("test"), {"c", "d"}, 1);
  EXPECT_THAT(LoadImageFolder(dir.path(), RgbSpec(), Quiet()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(dir.Join("test/d")), HasSubstr("train/ does not have"))));
}

TEST(ImageFolderTest, SplitFoldersBesideClassFoldersAreAnError) {
  ScopedTempDir dir;
  WriteClasses(dir.path(), {"cat", "train"}, 2);
  EXPECT_THAT(LoadImageFolder(dir.path(), RgbSpec(), Quiet()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("mixes split folders (train)"), HasSubstr("(cat)"))));
}

TEST(ImageFolderTest, ClassNamesMustBeUtf8WithoutControlCharacters) {
  ScopedTempDir dir;
  WriteClasses(dir.path(), {"caf\xc3\xa9", "ok"}, 2);  // "café": fine
  ImageFolderOptions options = Quiet();
  options.validation_fraction = options.test_fraction = 0;
  ASSERT_OK_AND_ASSIGN(ImageFolderDataset data, LoadImageFolder(dir.path(), RgbSpec(), options));
  EXPECT_THAT(data.class_names, ElementsAre("caf\xc3\xa9", "ok"));

  WriteClasses(dir.path(), {"bad\xff\xfe"}, 1);
  EXPECT_THAT(LoadImageFolder(dir.path(), RgbSpec(), options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("bad\\xff\\xfe"), HasSubstr("not valid UTF-8"))));
  fs::remove_all(dir.Join("bad\xff\xfe"));
  WriteClasses(dir.path(), {"tab\there"}, 1);
  EXPECT_THAT(LoadImageFolder(dir.path(), RgbSpec(), options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("control character")));
}

TEST(ImageFolderTest, SymlinkedClassFoldersAreFollowedUnderTheirOwnName) {
  ScopedTempDir elsewhere, dir;
  WriteClasses(elsewhere.path(), {"real"}, 3);
  WriteClasses(dir.path(), {"a"}, 3);
  fs::create_directory_symlink(elsewhere.Join("real"), dir.Join("b"));
  ImageFolderOptions options = Quiet();
  options.validation_fraction = options.test_fraction = 0;
  ASSERT_OK_AND_ASSIGN(ImageFolderDataset data, LoadImageFolder(dir.path(), RgbSpec(), options));
  EXPECT_THAT(data.class_names, ElementsAre("a", "b"));
  EXPECT_EQ(data.train.size(), 6);
  EXPECT_EQ(data.train.paths[3], "b/img0.png");
}

TEST(ImageFolderTest, RefusesWhatItCannotUse) {
  ScopedTempDir dir;
  EXPECT_THAT(LoadImageFolder(dir.Join("missing"), RgbSpec(), Quiet()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing")));
  EXPECT_THAT(LoadImageFolder(dir.path(), RgbSpec(), Quiet()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no class folders")));
  WriteClasses(dir.path(), {"a"}, 1);
  ImageFolderOptions options = Quiet();
  options.test_fraction = 0.95;
  EXPECT_THAT(LoadImageFolder(dir.path(), RgbSpec(), options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("sum below 1")));
  // One image cannot fill three splits.
  EXPECT_THAT(LoadImageFolder(dir.path(), RgbSpec(), Quiet()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("raise the fraction")));
  v1::InputSpec bad = RgbSpec();
  bad.set_channels(2);
  EXPECT_THAT(LoadImageFolder(dir.path(), bad, Quiet()),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ImageFolderTest, ParsesSplitNames) {
  EXPECT_THAT(ParseDataSplit("test"), IsOk());
  ASSERT_OK_AND_ASSIGN(DataSplit s, ParseDataSplit("validation"));
  EXPECT_EQ(s, DataSplit::kValidation);
  EXPECT_STREQ(DataSplitName(s), "val");
  EXPECT_THAT(ParseDataSplit("dev"), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace hapi
