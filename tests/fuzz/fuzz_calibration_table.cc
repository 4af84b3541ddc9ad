// CalibrationTable::Parse, the reader of the binary calibration tables in a
// model's directory, and what the optimizer does with a table it accepted:
// score designs with the latency model and build the search space.
//
// Input layout: byte 0 bit 0 set: the last 4 bytes of the rest are replaced
// by the CRC-32 of what precedes them (so that mutations get past the
// checksum to the header and the data); the rest is the table file. Bits 1-2
// pick the exit policy for the scoring.
//
// Checks: a table is either refused with DATA_LOSS and a printable message,
// or it is consistent (labels and predictions below the class count,
// accuracies in [0, 1]), serializes back to exactly the bytes read (a
// HAPICAL1 table: to HAPICAL2 bytes that parse to the same table), and its
// predictions keep their promises (fuzz_fixtures.h).
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/calibration_table.h"
#include "core/design_search.h"
#include "core/sla.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/fuzz_fixtures.h"

namespace {

// Scoring and searching grow with exits; larger tables are still parsed and
// checked, only not scored.
constexpr int kMaxScoredExits = 12;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string file(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((data[0] & 1) && file.size() >= 4) {
    const uint32_t crc = static_cast<uint32_t>(
        crc32(0L, reinterpret_cast<const Bytef*>(file.data()), file.size() - 4));
    for (int i = 0; i < 4; ++i) file[file.size() - 4 + i] = static_cast<char>(crc >> (8 * i));
  }
  const auto policy = static_cast<hapi::ExitPolicy>(((data[0] >> 1) & 3) % hapi::kNumExitPolicies);

  absl::StatusOr<hapi::CalibrationTable> table = hapi::CalibrationTable::Parse(file);
  if (!table.ok()) {
    hapi::fuzz::CheckRefusal(table.status(), absl::StatusCode::kDataLoss);
    return 0;
  }
  HAPI_FUZZ_CHECK(table->num_samples() > 0 && table->num_exits() > 0);
  // HAPICAL1 holds u8 labels, HAPICAL2 u16 ones.
  const bool v1 = file.compare(0, 8, "HAPICAL1") == 0;
  HAPI_FUZZ_CHECK(v1 || file.compare(0, 8, "HAPICAL2") == 0);
  HAPI_FUZZ_CHECK(table->num_classes() >= 2 &&
                  table->num_classes() <= (v1 ? 255 : hapi::CalibrationTable::kMaxClasses));
  for (int s = 0; s < table->num_samples(); ++s) {
    HAPI_FUZZ_CHECK(table->true_label(s) < table->num_classes());
  }
  for (int e = 0; e < table->num_exits(); ++e) {
    const double accuracy = table->Accuracy(e);
    HAPI_FUZZ_CHECK(accuracy >= 0 && accuracy <= 1);
    for (int s = 0; s < table->num_samples(); ++s) {
      HAPI_FUZZ_CHECK(table->predicted(e, s) < table->num_classes());
    }
  }
  const std::string bytes = table->Serialize();
  if (v1) {
    // Written back as HAPICAL2: two bytes per label and prediction, the rest
    // the same, and the same table when read again.
    const size_t labels = static_cast<size_t>(table->num_samples()) * (1 + table->num_exits());
    HAPI_FUZZ_CHECK(bytes.size() == file.size() + labels);
    HAPI_FUZZ_CHECK(bytes.compare(0, 8, "HAPICAL2") == 0);
    HAPI_FUZZ_CHECK(bytes.compare(8, 12, file, 8, 12) == 0);
    HAPI_FUZZ_CHECK(bytes.compare(20 + 2 * labels, bytes.size() - 24 - 2 * labels, file,
                                  20 + labels, file.size() - 24 - labels) == 0);
    absl::StatusOr<hapi::CalibrationTable> again = hapi::CalibrationTable::Parse(bytes);
    HAPI_FUZZ_CHECK(again.ok());
    for (int s = 0; s < table->num_samples(); ++s) {
      HAPI_FUZZ_CHECK(again->true_label(s) == table->true_label(s));
      for (int e = 0; e < table->num_exits(); ++e) {
        HAPI_FUZZ_CHECK(again->predicted(e, s) == table->predicted(e, s));
      }
    }
    HAPI_FUZZ_CHECK(again->Serialize() == bytes);
  } else {
    HAPI_FUZZ_CHECK(bytes == file);
  }

  if (table->num_exits() > kMaxScoredExits) return 0;
  const hapi::v1::ModelManifest manifest =
      hapi::fuzz::FakeManifest(table->num_exits(), table->num_classes());
  absl::StatusOr<hapi::LatencyModel> latency = hapi::fuzz::AnalyticLatency(manifest);
  HAPI_FUZZ_CHECK(latency.ok());
  hapi::fuzz::CheckPredictions(*latency, *table, policy);
  // What the optimizer's search makes of the table's scores: the threshold
  // grid from their quantiles, then a search for the fastest design within
  // one point of the final exit.
  hapi::Sla sla;
  sla.objective = hapi::SlaObjective::kMinLatency;
  sla.max_accuracy_drop = 0.01;
  absl::StatusOr<std::unique_ptr<hapi::DesignSearch>> search = hapi::MakeDesignSearch("hapi");
  HAPI_FUZZ_CHECK(search.ok());
  hapi::fuzz::CheckSearch(**search, *table, *latency, sla, policy, false, 1);
  return 0;
}
