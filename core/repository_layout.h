// The one place that knows the repository's on-disk layout:
//
//   <root>/models/<model>/     manifest.pbtxt, weights, calibration tables
//   <root>/devices/<device>/   profile.pbtxt
//   <root>/variants/<variant>/ variant.pbtxt, pareto.csv, pareto.svg
//   <root>/optimizer.db        hapi-optimizer's state (its default place)
//
// Paths only: callers validate names (ValidateName) before building a path
// from user input.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace hapi {

inline constexpr char kVariantFile[] = "variant.pbtxt";
inline constexpr char kProfileFile[] = "profile.pbtxt";
inline constexpr char kOptimizerStateFile[] = "optimizer.db";

class RepositoryLayout {
 public:
  explicit RepositoryLayout(std::string root) : root_(std::move(root)) {}

  const std::string& root() const { return root_; }
  std::string ModelsDir() const;
  std::string DevicesDir() const;
  std::string VariantsDir() const;

  std::string ModelDir(absl::string_view model) const;
  std::string DeviceDir(absl::string_view device) const;
  std::string DeviceProfile(absl::string_view device) const;
  std::string VariantDir(absl::string_view variant) const;
  std::string VariantManifest(absl::string_view variant) const;
  std::string OptimizerState() const;

 private:
  std::string root_;
};

}  // namespace hapi
