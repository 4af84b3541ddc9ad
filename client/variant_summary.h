// One line per variant for `hapi-client variants list`.
#pragma once

#include <string>

#include "hapi/v1/optimizer.pb.h"

namespace hapi::client {

// What the variant's certification (docs/certified-slas.md) promises, in
// columns: "certified" or "NOT certified"; the accuracy bound ("acc >= X%" for
// an absolute floor or an SLA without one, "drop <= Y pts" for a max-drop
// SLA); "<statistic> <= Z ms" (the certified upper bound of the SLA's
// statistic); "at C%" (the one-sided confidence of each bound); and, when not
// certified, the note saying what is served instead. "no certification" for a
// variant built without it.
std::string CertificationColumns(const v1::VariantManifest& variant);

// id, device, precision, exits, predicted accuracy and mean latency (point estimates on
// the validation split), then CertificationColumns. No newline.
std::string VariantLine(const v1::VariantManifest& variant);

}  // namespace hapi::client
