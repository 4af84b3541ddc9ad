// Invariant checks for the fuzz targets. A broken invariant is a finding: it
// is printed and the process aborts, which libFuzzer records as a crash
// together with the input that caused it.
#pragma once

#include <cstddef>
#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

#define HAPI_FUZZ_CHECK(cond) \
  ((cond) ? static_cast<void>(0) : ::hapi::fuzz::Fail(#cond, __FILE__, __LINE__))

namespace hapi::fuzz {

[[noreturn]] inline void Fail(const char* what, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: fuzz invariant broken: %s\n", file, line, what);
  std::abort();
}

inline bool IsPrintableAscii(absl::string_view text) {
  for (unsigned char c : text) {
    if (c < 0x20 || c >= 0x7f) return false;
  }
  return true;
}

// Well-formed UTF-8 (no overlong forms, surrogates or code points beyond
// U+10FFFF): what a status message must be, since messages end up in proto
// string fields and in clients that decode them.
inline bool IsValidUtf8(absl::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = text[i];
    int extra;
    unsigned min, cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      extra = 1, min = 0x80, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      extra = 2, min = 0x800, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      extra = 3, min = 0x10000, cp = c & 0x07;
    } else {
      return false;
    }
    if (text.size() - i <= static_cast<size_t>(extra)) return false;
    for (int k = 1; k <= extra; ++k) {
      const unsigned char d = text[i + k];
      if ((d & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += extra + 1;
  }
  return true;
}

// What every refusal of bad input must look like: the given code and a
// non-empty, well-formed UTF-8 message.
inline void CheckRefusal(const absl::Status& status, absl::StatusCode code) {
  HAPI_FUZZ_CHECK(status.code() == code);
  HAPI_FUZZ_CHECK(!status.message().empty());
  HAPI_FUZZ_CHECK(IsValidUtf8(status.message()));
}

// The same, for the refusals that promise printable ASCII (the image
// decoder's: its messages can echo input bytes, which it escapes).
inline void CheckPrintableRefusal(const absl::Status& status, absl::StatusCode code) {
  CheckRefusal(status, code);
  HAPI_FUZZ_CHECK(IsPrintableAscii(status.message()));
}

}  // namespace hapi::fuzz
