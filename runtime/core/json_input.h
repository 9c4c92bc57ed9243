// JSON from untrusted text (config.json, tokenizer.json, indexes, cluster and placement files,
// traces' metadata): a nesting-depth limit checked before the parser runs, and error messages
// that quote a bounded excerpt, never a whole value. nlohmann::json's dump() and destructor
// recurse once per nesting level, so a value 100,000 levels deep must never be built.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "runtime/core/status.h"

namespace sy {

// Deeper than any real config or tokenizer (they nest 3-5 levels).
constexpr int kMaxJsonDepth = 64;

// The byte offset of the first '[' or '{' (outside strings) that opens nesting level
// max_depth + 1, or -1 when `text` nests no deeper than max_depth. Linear, no allocation.
int64_t json_nesting_exceeds(const std::string& text, int max_depth);

// Parses `text` as JSON. BadInput naming `source` and the byte offset when the text nests
// arrays/objects deeper than max_depth (checked by a scan before parsing) or is not valid
// JSON (the parser's message, cut to a bounded length).
StatusOr<nlohmann::json> parse_json_bounded(const std::string& text, const std::string& source,
                                            int max_depth = kMaxJsonDepth);

// As parse_json_bounded, and the top level must be an object.
StatusOr<nlohmann::json> parse_json_object_bounded(const std::string& text,
                                                   const std::string& source,
                                                   int max_depth = kMaxJsonDepth);

// A short rendering of `v` for an error message: numbers, booleans and null as JSON; strings
// quoted and cut after max_chars; arrays and objects as "an array of N values" / "an object
// with N keys" (their contents are not dumped).
std::string json_brief(const nlohmann::json& v, size_t max_chars = 60);

}  // namespace sy
