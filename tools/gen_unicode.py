#!/usr/bin/env python3
"""Generate the Unicode tables the tokenizer needs: the appendix at the end of qwen.hpp.

    python3 tools/gen_unicode.py            # rewrites the generated block of qwen.hpp in place
    python3 tools/gen_unicode.py --stdout   # prints it instead

Exact agreement with the Hugging Face tokenizer is the goal, and the reference library does not use one
Unicode version throughout: its regex engine (Oniguruma) knows Unicode 16.0, while its NFC normalizer
knows Unicode 9.0 (it lacks U+11938's decomposition and the combining classes of the marks added since). So the values come from Python's `unicodedata`, and, when the `tokenizers` package is installed,
every table is checked against it code point by code point and follows it where the two disagree:
  - \\p{L}, \\p{N}, \\s: the sets the reference regex engine matches (probed for every code point);
  - NFC data: Python's mappings, minus the entries the reference normalizer does not know.
Without `tokenizers` the tables are Python's alone (and say so in the banner).
"""
import os
import sys
import unicodedata

MAX_CP = 0x110000
CODE_POINTS = [c for c in range(MAX_CP) if not 0xD800 <= c < 0xE000]  # surrogates are not text
HANGUL_S_BASE, HANGUL_S_COUNT = 0xAC00, 11172

try:
    import tokenizers
    from tokenizers import Regex, normalizers, pre_tokenizers
except ImportError:
    tokenizers = None


# ---- character classes ----------------------------------------------------------------------------

def probe_class(pattern):
    """The code points the reference regex engine matches with `pattern` (one character)."""
    text = ''.join(map(chr, CODE_POINTS))
    splitter = pre_tokenizers.Split(Regex(pattern), behavior='removed')
    outside = set()
    for piece, _ in splitter.pre_tokenize_str(text):
        outside.update(map(ord, piece))
    return set(CODE_POINTS) - outside


def python_class(name):
    if name == 'L':
        return {c for c in CODE_POINTS if unicodedata.category(chr(c)).startswith('L')}
    if name == 'N':
        return {c for c in CODE_POINTS if unicodedata.category(chr(c)).startswith('N')}
    # Oniguruma's \s is the White_Space property; str.isspace() adds U+001C..U+001F, which are not.
    return {c for c in CODE_POINTS if chr(c).isspace()} - {0x1C, 0x1D, 0x1E, 0x1F}


def to_ranges(members):
    ranges = []
    for c in sorted(members):
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return ranges


# ---- NFC data -------------------------------------------------------------------------------------

def canonical_decomposition(c):
    """Single-step canonical decomposition of c as a list, or None."""
    d = unicodedata.decomposition(chr(c))
    if not d or d.startswith('<'):
        return None
    return [int(x, 16) for x in d.split()]


def full_decomposition(c):
    parts = canonical_decomposition(c)
    if parts is None:
        return [c]
    return [x for p in parts for x in full_decomposition(p)]


def nfc_data(reference_nfc):
    def ref(s):
        return reference_nfc(s) if reference_nfc else unicodedata.normalize('NFC', s)

    # Canonical combining classes; a mark the reference does not know is a starter (class 0) to it.
    ccc = {}
    for c in CODE_POINTS:
        k = unicodedata.combining(chr(c))
        if k == 0:
            continue
        if reference_nfc:
            # Known marks get reordered past U+0334 (class 1) or U+0345 (class 240) in one of these probes.
            a, b = chr(c) + '\u0334', '\u0345' + chr(c)
            if ref(a) == a and ref(b) == b:
                continue
        ccc[c] = k

    # Full canonical decompositions (Hangul syllables are algorithmic and left out).
    decomp = {}
    for c in CODE_POINTS:
        if HANGUL_S_BASE <= c < HANGUL_S_BASE + HANGUL_S_COUNT or canonical_decomposition(c) is None:
            continue
        if reference_nfc and normalizers.NFD().normalize_str(chr(c)) == chr(c):
            continue  # a decomposition the reference does not know
        decomp[c] = full_decomposition(c)

    # Primary composites: pairs that NFC recomposes (composition exclusions and singletons drop out).
    comp = {}
    for c, parts in ((c, canonical_decomposition(c)) for c in decomp):
        if len(parts) == 2 and ref(chr(parts[0]) + chr(parts[1])) == chr(c):
            comp[(parts[0], parts[1])] = c

    # NFC quick check "not Yes": characters NFC changes (No) or that may combine with what precedes (Maybe).
    maybe = {second for (_, second) in comp} | set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))
    no = {c for c in decomp if ref(chr(c)) != chr(c)}
    return ccc, decomp, comp, no | maybe


BEGIN = '// BEGIN GENERATED UNICODE TABLES'
END = '// END GENERATED UNICODE TABLES'


# ---- output ---------------------------------------------------------------------------------------

def emit_rows(items, per_line):
    lines = []
    for i in range(0, len(items), per_line):
        lines.append('    ' + ' '.join(items[i:i + per_line]))
    return '\n'.join(lines)


def emit_ranges(name, comment, ranges):
    items = ['{0x%X, 0x%X},' % (lo, hi) for lo, hi in ranges]
    return ('// %s: %d ranges.\ninline constexpr CodeRange %s[] = {\n%s\n};\n'
            % (comment, len(ranges), name, emit_rows(items, 5)))


def generate():
    have_ref = tokenizers is not None
    classes = {}
    for name, pattern in (('L', r'\p{L}'), ('N', r'\p{N}'), ('S', r'\s')):
        classes[name] = probe_class(pattern) if have_ref else python_class(name)
    reference_nfc = normalizers.NFC().normalize_str if have_ref else None
    ccc, decomp, comp, not_yes = nfc_data(reference_nfc)

    ccc_ranges = []
    for c in sorted(ccc):
        if ccc_ranges and ccc_ranges[-1][1] == c - 1 and ccc_ranges[-1][2] == ccc[c]:
            ccc_ranges[-1][1] = c
        else:
            ccc_ranges.append([c, c, ccc[c]])

    pool, decomp_rows = [], []
    for c in sorted(decomp):
        decomp_rows.append('{0x%X, %d, %d},' % (c, len(pool), len(decomp[c])))
        pool.extend(decomp[c])

    if have_ref:
        source = ('Python %s unicodedata (Unicode %s), matched code point by code point to the\n'
                  '// reference tokenizer (tokenizers %s). Its regex engine knows Unicode 16.0\n'
                  '// (\\p{L}, \\p{N}, \\s below are its sets); its NFC normalizer Unicode 9.0 (marks and mappings\n'
                  '// added since, e.g. the decomposition of U+11938, are left out here).'
                  % (sys.version.split()[0], unicodedata.unidata_version, tokenizers.__version__))
    else:
        source = 'Python %s unicodedata (Unicode %s).' % (sys.version.split()[0], unicodedata.unidata_version)

    out = []
    out.append(BEGIN + '\n'
               '// ============================================================================\n'
               '// Appendix: Unicode tables for the tokenizer (character classes, NFC data)\n'
               '// ============================================================================\n'
               '// Generated by tools/gen_unicode.py; do not edit.\n// Source: %s\n'
               '// Every table is sorted by code point, so a lookup is a binary search.\n\n'
               'struct CodeRange { uint32_t lo, hi; };                 // inclusive\n'
               'struct CombiningRange { uint32_t lo, hi; uint8_t ccc; }; // canonical combining class\n'
               'struct Decomposition { uint32_t cp; uint16_t offset; uint8_t len; };  // into kDecompositionData\n'
               'struct Composition { uint32_t first, second, composite; };\n' % source)
    out.append(emit_ranges('kLetterRanges', 'Letters \\p{L} (general categories Lu Ll Lt Lm Lo)',
                           to_ranges(classes['L'])))
    out.append(emit_ranges('kNumberRanges', 'Numbers \\p{N} (general categories Nd Nl No)',
                           to_ranges(classes['N'])))
    out.append(emit_ranges('kSpaceRanges', 'White space \\s (the White_Space property)',
                           to_ranges(classes['S'])))
    items = ['{0x%X, 0x%X, %d},' % tuple(r) for r in ccc_ranges]
    out.append('// Canonical combining classes other than 0: %d ranges.\n'
               'inline constexpr CombiningRange kCombiningRanges[] = {\n%s\n};\n'
               % (len(ccc_ranges), emit_rows(items, 4)))
    out.append('// Full canonical decompositions (applied recursively already), Hangul syllables excluded\n'
               '// (%d characters): code point, offset and length in kDecompositionData.\n'
               'inline constexpr Decomposition kDecompositions[] = {\n%s\n};\n'
               % (len(decomp_rows), emit_rows(decomp_rows, 5)))
    out.append('inline constexpr uint32_t kDecompositionData[] = {\n%s\n};\n'
               % emit_rows(['0x%X,' % x for x in pool], 10))
    items = ['{0x%X, 0x%X, 0x%X},' % (a, b, c) for (a, b), c in sorted(comp.items())]
    out.append('// Canonical compositions: (first, second) -> primary composite, sorted by (first, second);\n'
               '// composition exclusions are absent, Hangul syllables are algorithmic (%d pairs).\n'
               'inline constexpr Composition kCompositions[] = {\n%s\n};\n'
               % (len(comp), emit_rows(items, 4)))
    out.append(emit_ranges('kNfcQuickCheckRanges',
                           'NFC quick check: characters whose NFC_Quick_Check is No or Maybe',
                           to_ranges(not_yes)))
    out.append(END + '\n')
    return '\n'.join(out)


def update(path):
    """Replaces the text between the BEGIN and END markers of path with freshly generated tables."""
    text = open(path, encoding='utf-8').read()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        sys.exit('gen_unicode.py: %s has no generated-table markers' % path)
    text = text[:start] + generate() + text[end + len(END) + 1:]
    open(path, 'w', encoding='utf-8').write(text)


if __name__ == '__main__':
    if sys.argv[1:] == ['--stdout']:
        sys.stdout.write(generate())
    elif not sys.argv[1:]:
        update(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'qwen.hpp'))
    else:
        sys.exit('usage: gen_unicode.py [--stdout]')
