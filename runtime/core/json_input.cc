#include "runtime/core/json_input.h"

namespace sy {
namespace {

constexpr size_t kMaxParserMessage = 160;

}  // namespace

int64_t json_nesting_exceeds(const std::string& text, int max_depth) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return static_cast<int64_t>(i);
    } else if (c == ']' || c == '}') {
      if (depth > 0) --depth;
    }
  }
  return -1;
}

StatusOr<nlohmann::json> parse_json_bounded(const std::string& text, const std::string& source,
                                            int max_depth) {
  if (const int64_t at = json_nesting_exceeds(text, max_depth); at >= 0)
    return BadInput(source + ": JSON nested deeper than " + std::to_string(max_depth) +
                    " levels (at byte " + std::to_string(at) + ")");
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    std::string m = e.what();
    if (m.size() > kMaxParserMessage) m = m.substr(0, kMaxParserMessage) + "...";
    return BadInput(source + ": not valid JSON (" + m + ")");
  }
}

StatusOr<nlohmann::json> parse_json_object_bounded(const std::string& text,
                                                   const std::string& source, int max_depth) {
  SY_ASSIGN_OR_RETURN(nlohmann::json j, parse_json_bounded(text, source, max_depth));
  if (!j.is_object()) return BadInput(source + ": not a JSON object (" + json_brief(j) + ")");
  return j;
}

std::string json_brief(const nlohmann::json& v, size_t max_chars) {
  if (v.is_array()) return "an array of " + std::to_string(v.size()) + " values";
  if (v.is_object()) return "an object with " + std::to_string(v.size()) + " keys";
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    if (s.size() <= max_chars)
      return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    const nlohmann::json cut = s.substr(0, max_chars);
    std::string d = cut.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    d.insert(d.size() - 1, "...");
    return d + " (" + std::to_string(s.size()) + " bytes)";
  }
  return v.dump();  // a number, boolean or null: short
}

}  // namespace sy
