// moesae lm: text corpora as documents, and the cutting of documents into model contexts shared by cross-entropy,
// splicing and activation extraction.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "lm/tokenizer.h"

namespace moesae::lm {

// Text split into documents: on "<|endoftext|>" when the text contains it, else on blank lines (one or more empty
// lines separate two documents). Documents are trimmed of surrounding whitespace; empty ones are dropped.
std::vector<std::string> split_documents(const std::string& text);

// PubMedQA (ori_pqal.json: a JSON object of items {QUESTION, CONTEXTS[], LONG_ANSWER, ...}): one document per item,
// in file order: its abstract, i.e. the CONTEXTS paragraphs then the LONG_ANSWER (the conclusion), joined by
// newlines. `what` names the source in errors.
std::vector<std::string> pubmedqa_documents(const std::string& json_text, const std::string& what);

// Fails with one message unless `format` is a known text format ("txt", "pubmedqa").
void check_text_format(const std::string& format);

// Reads a corpus file as documents. format: "txt" (split_documents) or "pubmedqa". Fails with one message naming the
// file when it cannot be read, is malformed, or holds no document.
std::vector<std::string> read_documents(const std::string& path, const std::string& format = "txt");

// Each document is encoded with BOS and cut into consecutive contexts of `ctx` tokens, context i covering tokens
// [i*ctx, (i+1)*ctx) while it has a token after its first one (documents of fewer than two tokens give none).
// fn(ids, start, len, doc) is called per context, in order (ids: the whole encoded document; doc: its index in
// `documents`); it returns false to stop.
void for_each_context(const Tokenizer& tok, const std::vector<std::string>& documents, int ctx,
                      const std::function<bool(const std::vector<int>& ids, int start, int len, size_t doc)>& fn);

}  // namespace moesae::lm
