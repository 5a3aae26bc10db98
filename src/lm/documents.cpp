#include "lm/documents.h"

#include <filesystem>
#include <fstream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace moesae::lm {

std::vector<std::string> split_documents(const std::string& text) {
  std::vector<std::string> parts;
  const std::string marker = "<|endoftext|>";
  if (text.find(marker) != std::string::npos) {
    size_t at = 0;
    for (;;) {
      const size_t e = text.find(marker, at);
      parts.push_back(text.substr(at, e == std::string::npos ? std::string::npos : e - at));
      if (e == std::string::npos) break;
      at = e + marker.size();
    }
  } else {
    // Blank-line separated: a line holding only whitespace ends the current document.
    std::string cur;
    size_t at = 0;
    while (at <= text.size()) {
      size_t e = text.find('\n', at);
      if (e == std::string::npos) e = text.size();
      const std::string line = text.substr(at, e - at);
      const bool blank = line.find_first_not_of(" \t\r") == std::string::npos;
      if (blank) {
        parts.push_back(cur);
        cur.clear();
      } else {
        if (!cur.empty()) cur += '\n';
        cur += line;
      }
      at = e + 1;
    }
    parts.push_back(cur);
  }
  std::vector<std::string> docs;
  for (auto& p : parts) {
    const size_t b = p.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) continue;
    const size_t e = p.find_last_not_of(" \t\r\n");
    docs.push_back(p.substr(b, e - b + 1));
  }
  return docs;
}

std::vector<std::string> pubmedqa_documents(const std::string& json_text, const std::string& what) {
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(json_text);
  } catch (const std::exception& e) {
    fail(what, ": not valid JSON (", e.what(), ")");
  }
  if (!j.is_object()) fail(what, ": a PubMedQA file is a JSON object of items (id -> {CONTEXTS, LONG_ANSWER, ...})");
  std::vector<std::string> docs;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const nlohmann::ordered_json& item = it.value();
    if (!item.is_object() || !item.contains("CONTEXTS") || !item["CONTEXTS"].is_array())
      fail(what, ": item '", it.key(), "' has no CONTEXTS array");
    std::string text;
    for (const auto& c : item["CONTEXTS"]) {
      if (!c.is_string()) fail(what, ": item '", it.key(), "' has a CONTEXTS entry that is not a string");
      if (!text.empty()) text += '\n';
      text += c.get<std::string>();
    }
    if (item.contains("LONG_ANSWER") && item["LONG_ANSWER"].is_string()) {
      if (!text.empty()) text += '\n';
      text += item["LONG_ANSWER"].get<std::string>();
    }
    if (text.find_first_not_of(" \t\r\n") != std::string::npos) docs.push_back(text);
  }
  return docs;
}

void check_text_format(const std::string& format) {
  if (format != "txt" && format != "pubmedqa")
    fail("text format '", format, "' is not known (txt: plain text, documents split on <|endoftext|> or blank lines; "
         "pubmedqa: PubMedQA JSON)");
}

std::vector<std::string> read_documents(const std::string& path, const std::string& format) {
  check_text_format(format);
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) fail("text '", path, "': no such file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("text '", path, "': cannot open the file");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> docs =
      format == "pubmedqa" ? pubmedqa_documents(text, "text '" + path + "'") : split_documents(text);
  if (docs.empty()) fail("text '", path, "' holds no document");
  return docs;
}

void for_each_context(const Tokenizer& tok, const std::vector<std::string>& documents, int ctx,
                      const std::function<bool(const std::vector<int>&, int, int, size_t)>& fn) {
  if (ctx < 1) fail("context length ", ctx, " must be positive");
  for (size_t d = 0; d < documents.size(); ++d) {
    const std::vector<int> ids = tok.encode(documents[d], /*bos=*/true);
    const int n = static_cast<int>(ids.size());
    for (int start = 0; start + 1 < n; start += ctx)
      if (!fn(ids, start, std::min(ctx, n - start), d)) return;
  }
}

}  // namespace moesae::lm
