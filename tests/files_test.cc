#include "core/files.h"

#include <sys/stat.h>

#include <filesystem>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hapi/v1/model.pb.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"

namespace hapi {
namespace {

namespace fs = std::filesystem;
using ::hapi::testing::IsOk;
using ::hapi::testing::ListDir;
using ::hapi::testing::ReadBytes;
using ::hapi::testing::ScopedTempDir;
using ::hapi::testing::StatusIs;
using ::hapi::testing::WriteBytes;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

// Entries of `dir` that are staging leftovers.
std::vector<std::string> TempEntries(const std::string& dir) {
  std::vector<std::string> out;
  for (const std::string& name : ListDir(dir)) {
    if (IsStagingName(name)) out.push_back(name);
  }
  return out;
}

TEST(ValidateNameTest, AcceptsValidNames) {
  for (const std::string& name :
       {std::string("a"), std::string("0"), std::string("fmnist-resnet"), std::string("x.y_z-1"),
        std::string("a.."), std::string(64, 'a'), std::string("9") + std::string(63, '-')}) {
    EXPECT_THAT(ValidateName(name, "model name"), IsOk()) << "'" << name << "'";
  }
}

TEST(ValidateNameTest, RejectsInvalidNames) {
  for (const std::string& name :
       {std::string(""), std::string("../x"), std::string("A"), std::string("-a"),
        std::string(".hidden"), std::string("."), std::string(".."), std::string("a/b"),
        std::string(65, 'a'), std::string("aB"), std::string("a b"), std::string("_a"),
        std::string("a\\b"), std::string("caf\xc3\xa9"), std::string("a\0b", 3)}) {
    EXPECT_THAT(ValidateName(name, "model name"),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("invalid model name")))
        << "'" << name << "'";
  }
}

TEST(ValidateNameTest, MessageNamesWhatAndTheName) {
  EXPECT_THAT(ValidateName("Bad", "design name"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("design name"), HasSubstr("'Bad'"))));
}

TEST(ValidateNameTest, MessageIsAsciiWhateverTheNameHolds) {
  // "café": the refused byte is the first of a two-byte UTF-8 sequence.
  absl::Status st = ValidateName("caf\xc3\xa9", "variant id");
  EXPECT_THAT(st, StatusIs(absl::StatusCode::kInvalidArgument,
                           AllOf(HasSubstr("'caf\\xc3\\xa9'"), HasSubstr("'\\xc3' not allowed"))));
  for (char c : st.message()) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << st;
  // Long names are cut.
  st = ValidateName(std::string(1000, 'a') + "\xff", "model name");
  EXPECT_LT(st.message().size(), 200u);
  EXPECT_THAT(st, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("...")));
}

TEST(ReadFileTest, ReadsBinaryAndReportsMissingAsNotFound) {
  ScopedTempDir dir;
  const std::string bytes("a\0b\xff\n", 5);
  WriteBytes(dir.Join("f"), bytes);
  absl::StatusOr<std::string> read = ReadFile(dir.Join("f"));
  ASSERT_THAT(read, IsOk());
  EXPECT_EQ(*read, bytes);
  EXPECT_THAT(ReadFile(dir.Join("missing")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(dir.Join("missing"))));
}

TEST(WriteFileAtomicallyTest, WritesAndOverwritesWithoutLeftovers) {
  ScopedTempDir dir;
  const std::string path = dir.Join("data.bin");
  ASSERT_THAT(WriteFileAtomically(path, "first version, longer than the second"), IsOk());
  EXPECT_EQ(ReadBytes(path), "first version, longer than the second");
  ASSERT_THAT(WriteFileAtomically(path, std::string("2nd\0", 4)), IsOk());
  EXPECT_EQ(ReadBytes(path), std::string("2nd\0", 4));
  ASSERT_THAT(WriteFileAtomically(dir.Join("empty"), ""), IsOk());
  EXPECT_EQ(fs::file_size(dir.Join("empty")), 0u);
  EXPECT_THAT(ListDir(dir.path()), ElementsAre("data.bin", "empty"));
  EXPECT_THAT(TempEntries(dir.path()), IsEmpty());
}

TEST(WriteGeneratedSectionTest, ReplacesOnlyTheGeneratedSection) {
  ScopedTempDir dir;
  const std::string path = dir.Join("doc.md");
  // A new file: just the section.
  ASSERT_THAT(WriteGeneratedSection(path, "| a |\n"), IsOk());
  EXPECT_EQ(ReadBytes(path), "<!-- generated: begin -->\n| a |\n<!-- generated: end -->\n");
  // Hand-written text around it survives a rewrite, a missing newline is added.
  WriteBytes(path,
             "# Title\nintro\n\n<!-- generated: begin -->\nold table\nmore\n"
             "<!-- generated: end -->\n\nReading: by hand.\n");
  ASSERT_THAT(WriteGeneratedSection(path, "| new |"), IsOk());
  EXPECT_EQ(ReadBytes(path),
            "# Title\nintro\n\n<!-- generated: begin -->\n| new |\n<!-- generated: end -->\n"
            "\nReading: by hand.\n");
  EXPECT_THAT(TempEntries(dir.path()), IsEmpty());
}

TEST(WriteGeneratedSectionTest, RefusesFilesWithoutMarkersAndLeavesThemAlone) {
  ScopedTempDir dir;
  const std::string path = dir.Join("doc.md");
  for (const std::string& text :
       {std::string("# Hand-written only\n"),
        std::string("<!-- generated: end -->\nx\n<!-- generated: begin -->\n"),
        std::string("<!-- generated: begin -->\nno end\n")}) {
    WriteBytes(path, text);
    EXPECT_THAT(WriteGeneratedSection(path, "| t |"),
                StatusIs(absl::StatusCode::kFailedPrecondition,
                         AllOf(HasSubstr(path), HasSubstr("generated section"))));
    EXPECT_EQ(ReadBytes(path), text);
  }
}

TEST(WriteFileAtomicallyTest, MissingDirectoryIsAnErrorWithoutLeftovers) {
  ScopedTempDir dir;
  EXPECT_THAT(WriteFileAtomically(dir.Join("no/such/dir/file"), "x"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(dir.Join("no/such/dir"))));
  EXPECT_THAT(ListDir(dir.path()), IsEmpty());
}

TEST(MakeDirectoriesTest, CreatesNestedAndIsIdempotent) {
  ScopedTempDir dir;
  ASSERT_THAT(MakeDirectories(dir.Join("a/b/c")), IsOk());
  EXPECT_TRUE(fs::is_directory(dir.Join("a/b/c")));
  EXPECT_THAT(MakeDirectories(dir.Join("a/b/c")), IsOk());
  WriteBytes(dir.Join("file"), "x");
  EXPECT_THAT(MakeDirectories(dir.Join("file/sub")), ::testing::Not(IsOk()));
}

TEST(PublishDirectoryTest, StagingDirectoryIsBesideTheTarget) {
  ScopedTempDir dir;
  const std::string final_dir = dir.Join("models/m1");
  absl::StatusOr<std::string> staging = MakeStagingDirectory(final_dir);
  ASSERT_THAT(staging, IsOk());
  EXPECT_TRUE(fs::is_directory(*staging));
  EXPECT_EQ(fs::path(*staging).parent_path(), fs::path(dir.Join("models")));
  EXPECT_THAT(fs::path(*staging).filename().string(), StartsWith(".tmp-m1"));
  absl::StatusOr<std::string> other = MakeStagingDirectory(final_dir);
  ASSERT_THAT(other, IsOk());
  EXPECT_NE(*staging, *other);
}

// Restart recovery removes what IsStagingName matches, so it must match the
// names the writers use and never a name a repository object can have.
TEST(IsStagingNameTest, MatchesStagingNamesAndNoValidName) {
  ScopedTempDir dir;
  absl::StatusOr<std::string> staging = MakeStagingDirectory(dir.Join("m1"));
  ASSERT_THAT(staging, IsOk());
  EXPECT_TRUE(IsStagingName(fs::path(*staging).filename().string()));
  EXPECT_TRUE(IsStagingName(".tmp-profile.pbtxt-123-456"));
  for (const char* name : {"tmp-x", "a.tmp-", "x.tmp-y", "0", "profile.pbtxt"}) {
    ASSERT_THAT(ValidateName(name, "name"), IsOk()) << name;
    EXPECT_FALSE(IsStagingName(name)) << name;
  }
  EXPECT_THAT(ValidateName(kStagingPrefix, "name"), ::testing::Not(IsOk()));
  EXPECT_FALSE(IsStagingName(".tmp"));
  EXPECT_FALSE(IsStagingName(""));
}

TEST(PublishDirectoryTest, PublishesNewDirectory) {
  ScopedTempDir dir;
  const std::string final_dir = dir.Join("m");
  absl::StatusOr<std::string> staging = MakeStagingDirectory(final_dir);
  ASSERT_THAT(staging, IsOk());
  ASSERT_THAT(WriteFileAtomically(*staging + "/a.txt", "A"), IsOk());
  ASSERT_THAT(PublishDirectory(*staging, final_dir), IsOk());
  EXPECT_EQ(ReadBytes(final_dir + "/a.txt"), "A");
  EXPECT_FALSE(fs::exists(*staging));
  EXPECT_THAT(ListDir(dir.path()), ElementsAre("m"));
}

TEST(PublishDirectoryTest, ReplacesExistingDirectory) {
  ScopedTempDir dir;
  const std::string final_dir = dir.Join("m");
  ASSERT_THAT(MakeDirectories(final_dir + "/sub"), IsOk());
  WriteBytes(final_dir + "/old.txt", "old");
  WriteBytes(final_dir + "/sub/deep.txt", "deep");

  absl::StatusOr<std::string> staging = MakeStagingDirectory(final_dir);
  ASSERT_THAT(staging, IsOk());
  ASSERT_THAT(WriteFileAtomically(*staging + "/new.txt", "new"), IsOk());
  ASSERT_THAT(PublishDirectory(*staging, final_dir), IsOk());

  EXPECT_THAT(ListDir(final_dir), ElementsAre("new.txt"));
  EXPECT_EQ(ReadBytes(final_dir + "/new.txt"), "new");
  // Neither the staging directory nor the moved-aside old one remain.
  EXPECT_THAT(ListDir(dir.path()), ElementsAre("m"));
}

TEST(PublishDirectoryTest, MissingStagingIsAnErrorAndKeepsTheTarget) {
  ScopedTempDir dir;
  const std::string final_dir = dir.Join("m");
  ASSERT_THAT(MakeDirectories(final_dir), IsOk());
  WriteBytes(final_dir + "/keep.txt", "keep");
  EXPECT_THAT(PublishDirectory(dir.Join(".tmp-m-missing"), final_dir), ::testing::Not(IsOk()));
  EXPECT_EQ(ReadBytes(final_dir + "/keep.txt"), "keep");
}

TEST(TextProtoTest, RoundTrip) {
  ScopedTempDir dir;
  v1::ModelManifest m;
  m.set_name("fmnist-tiny");
  m.mutable_backbone()->set_stem_channels(4);
  m.mutable_backbone()->add_widths(8);
  m.set_input_mean(0.25f);
  m.mutable_report()->add_backbone_epoch_seconds(1.5);
  ASSERT_THAT(WriteTextProtoAtomically(dir.Join("m.pbtxt"), m), IsOk());
  EXPECT_THAT(ReadBytes(dir.Join("m.pbtxt")), HasSubstr("name: \"fmnist-tiny\""));
  v1::ModelManifest read;
  ASSERT_THAT(ReadTextProto(dir.Join("m.pbtxt"), &read), IsOk());
  EXPECT_EQ(read.SerializeAsString(), m.SerializeAsString());
  EXPECT_THAT(TempEntries(dir.path()), IsEmpty());
}

TEST(TextProtoTest, GarbageIsInvalidArgumentNamingTheFile) {
  ScopedTempDir dir;
  WriteBytes(dir.Join("bad.pbtxt"), "name: \"x\"\nthis is { not a manifest");
  v1::ModelManifest m;
  EXPECT_THAT(
      ReadTextProto(dir.Join("bad.pbtxt"), &m),
      StatusIs(absl::StatusCode::kInvalidArgument,
               AllOf(HasSubstr(dir.Join("bad.pbtxt")), HasSubstr("hapi.v1.ModelManifest"))));
  WriteBytes(dir.Join("unknown-field.pbtxt"), "no_such_field: 3\n");
  EXPECT_THAT(ReadTextProto(dir.Join("unknown-field.pbtxt"), &m),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(TextProtoTest, MissingFileIsNotFound) {
  ScopedTempDir dir;
  v1::ModelManifest m;
  EXPECT_THAT(ReadTextProto(dir.Join("none.pbtxt"), &m),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(dir.Join("none.pbtxt"))));
}

}  // namespace
}  // namespace hapi
