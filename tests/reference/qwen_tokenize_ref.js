// Reference Qwen2 tokenizer (Hugging Face tokenizer.json, byte-level BPE) in plain node, no
// packages: the independent check for runtime/data/hf_tokenizer (which is written by hand over
// UTF-8). It follows tokenizers' encode(text, add_special_tokens=False) step by step:
//   1. added tokens cut out of the raw text literally (leftmost, then longest);
//   2. the rest normalized with String.prototype.normalize('NFC');
//   3. split with the file's own regex (Split, behavior Isolated: matches and the gaps between
//      them are pieces) compiled as a JavaScript 'u' regex after two translations: (?i:...)
//      becomes explicit case classes (s also matching U+017F, k also U+212A, as Unicode
//      simple case folding has it), and \s / \S become Unicode White_Space (JavaScript's \s
//      has U+FEFF and lacks U+0085; tokenizers' regex engines use White_Space);
//   4. each piece's UTF-8 bytes mapped through GPT-2's byte-to-unicode table;
//   5. BPE the plain way: repeatedly merge the adjacent pair of lowest rank (leftmost among
//      equals) until no pair has a rank; ids from model.vocab.
// Usage: node tests/reference/qwen_tokenize_ref.js tokenizer.json < text   (prints ids as JSON)
// or require() it: load(path).encode(text).
'use strict';
const fs = require('fs');

const WHITE_SPACE =
    '\\t\\n\\v\\f\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const FOLDS = {
  s: 's\\u017f',
  k: 'k\\u212a'
};

function translatePattern(p) {
  // (?i:...) -> (?:...) with each ASCII letter as a class of its case variants (no nesting).
  p = p.replace(/\(\?i:([^()]*)\)/g, (_, body) => '(?:' + body.replace(/[a-zA-Z]/g, ch => {
    const lo = ch.toLowerCase();
    return '[' + (FOLDS[lo] || lo) + lo.toUpperCase() + ']';
  }) + ')');
  let out = '', inClass = false;
  for (let i = 0; i < p.length; i++) {
    const c = p[i];
    if (c === '\\') {
      const e = p[i + 1];
      i++;
      if (e === 's')
        out += inClass ? WHITE_SPACE : '[' + WHITE_SPACE + ']';
      else if (e === 'S') {
        if (inClass) throw new Error('\\S inside a class is not translated');
        out += '[^' + WHITE_SPACE + ']';
      } else
        out += '\\' + e;
      continue;
    }
    if (c === '[' && !inClass)
      inClass = true;
    else if (c === ']' && inClass)
      inClass = false;
    out += c;
  }
  return new RegExp(out, 'gu');
}

function byteToUnicode() {
  const table = [];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    table.push(String.fromCodePoint(printable ? b : 256 + n++));
  }
  return table;
}

function load(path) {
  const j = JSON.parse(fs.readFileSync(path, 'utf8'));
  if (j.model.type !== 'BPE') throw new Error('not a BPE model');
  const vocab = new Map(Object.entries(j.model.vocab));
  const ranks = new Map();
  j.model.merges.forEach((m, rank) => {
    const [a, b] = typeof m === 'string' ? m.split(' ') : m;
    ranks.set(a + ' ' + b, rank);  // a repeated pair keeps its last rank
  });
  const added = (j.added_tokens || [])
                    .map(t => ({content: t.content, id: t.id}))
                    .sort((x, y) => y.content.length - x.content.length);
  const split = j.pre_tokenizer.pretokenizers.find(p => p.type === 'Split');
  const regex = translatePattern(split.pattern.Regex);
  const nfc = j.normalizer && j.normalizer.type === 'NFC';
  const b2u = byteToUnicode();
  const cache = new Map();

  function bpe(piece) {
    const hit = cache.get(piece);
    if (hit) return hit;
    const sym = [...Buffer.from(piece, 'utf8')].map(b => b2u[b]);
    const rankAt = i => {
      const r = ranks.get(sym[i] + ' ' + sym[i + 1]);
      return r === undefined ? Infinity : r;
    };
    const pr = [];
    for (let i = 0; i + 1 < sym.length; i++) pr.push(rankAt(i));
    for (;;) {
      let best = 0;
      for (let i = 1; i < pr.length; i++)
        if (pr[i] < pr[best]) best = i;
      if (!pr.length || pr[best] === Infinity) break;
      sym.splice(best, 2, sym[best] + sym[best + 1]);
      pr.splice(best, 1);
      if (best > 0) pr[best - 1] = rankAt(best - 1);
      if (best < pr.length) pr[best] = rankAt(best);
    }
    const ids = sym.map(s => {
      const id = vocab.get(s);
      if (id === undefined) throw new Error('symbol not in vocab: ' + s);
      return id;
    });
    if (piece.length <= 64) cache.set(piece, ids);
    return ids;
  }

  function encodePlain(text, out) {
    if (!text) return;
    if (nfc) text = text.normalize('NFC');
    let last = 0;
    const pieces = [];
    for (const m of text.matchAll(regex)) {
      if (m.index > last) pieces.push(text.slice(last, m.index));  // Isolated: gaps too
      if (m[0].length) pieces.push(m[0]);
      last = m.index + m[0].length;
    }
    if (last < text.length) pieces.push(text.slice(last));
    for (const p of pieces)
      for (const id of bpe(p)) out.push(id);
  }

  function encode(text) {
    const out = [];
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const t = added.find(a => text.startsWith(a.content, i));
      if (!t) continue;
      encodePlain(text.slice(start, i), out);
      out.push(t.id);
      start = i + t.content.length;
      i = start - 1;
    }
    encodePlain(text.slice(start), out);
    return out;
  }
  return {encode, regex};
}

module.exports = {
  load,
  translatePattern
};

if (require.main === module) {
  const tok = load(process.argv[2]);
  process.stdout.write(JSON.stringify(tok.encode(fs.readFileSync(0, 'utf8'))) + '\n');
}
