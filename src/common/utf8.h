// UTF-8 validation for text that outside parties send us (config files, API bodies): JSON output
// must be valid UTF-8, so invalid input is rejected where it enters. Thread-safe (pure function).
#pragma once

#include <cstddef>
#include <string_view>

namespace bluegreen {

// Returns the offset of the first byte that is not part of a valid UTF-8 sequence (overlong
// forms, surrogates and code points above U+10FFFF are invalid), or npos when all of it is valid.
size_t FindInvalidUtf8(std::string_view text);

// Well-formed UTF-8 without NUL: what JSON output can hold and read back unchanged.
bool IsCleanUtf8(std::string_view text);

}  // namespace bluegreen
