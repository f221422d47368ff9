/* gumshoe._jsonl: JSON lines of flat objects (and CSV lines) -> columns, the fast path of bulk
 * import.
 *
 * scan(chunk, fields, kinds, outs, nils, ignore_unknown) -> tuple | None
 *
 *   One pass over a chunk of JSON lines, each exactly one flat object, writing the values of
 *   the named fields into per-field output buffers. It only takes the plain, common case and
 *   declines (returns None) on anything else, so the caller's reference decoders (pyarrow,
 *   msgspec) decide every unusual or bad chunk and name its bad lines: a blank line, a line
 *   that is not one object, a nested value, a string with an escape or a control character,
 *   a string that is not valid UTF-8, a number in a string field or text in a number field,
 *   true/false in a field, a fraction or exponent in an integer field, an integer beyond 64
 *   bits, a field given twice, an unknown key when `ignore_unknown` is false.
 *
 *   chunk   a bytes-like object of JSON lines (the last line may lack its newline).
 *   fields  a tuple of bytes: the keys (as they appear between the quotes; at most 64).
 *   kinds   bytes, one per field: 's' string, 'i' int64, 'u' uint64, 'f' float64 (integers
 *           and decimals, as their correctly rounded double), 'x' skipped (an allowed key
 *           whose scalar value is not kept), 'h' an identity (a uniques metric): a string or
 *           an integer, both as text (an integer token is its decimal text; -0 declined), so
 *           5 and "5" are one distinct text, as they are one identity.
 *   outs    one writable buffer per field of n_lines items: int32 codes ('s', 'h'), int64 ('i'),
 *           uint64 ('u'), float64 ('f'); None for 'x'.
 *   nils    one writable uint8 buffer per field of n_lines items: 1 where the field is null or
 *           missing (the value written is then 0); None for 'x'.
 *   The answer is (rows, uniques): rows is the number of lines; uniques has, per field, the
 *   list of its distinct strings in first-seen order (the codes index it) for 's' and 'h',
 *   else None.
 *
 * scan_array(body, fields, kinds, outs, nils, ignore_unknown) -> tuple | None
 *
 *   The same for one JSON array of flat objects (an insert body: `[{...}, {...}]`, any
 *   whitespace between tokens); the outputs hold at least as many items as the body has
 *   `{` bytes, and rows is the number of objects. This is the server's insert fast path
 *   (gumshoe/rowdecoder.py); it declines exactly as `scan` does.
 *
 * lines(chunk) -> int counts the lines as `scan` does (memchr: bytes.count is a byte loop).
 *
 * The scanners release the GIL while they scan (strings are kept as pointers into the chunk;
 * the distinct ones become Python strings, their UTF-8 checked, afterwards), so threads of
 * one process scan bodies in parallel.
 *
 * Measured on the benchmark's lines (7 fields, ~100 bytes): about 5x less CPU than pyarrow's
 * JSON reader with an explicit schema, and no Python object per row (strings are hashed and
 * decoded once per distinct value).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FIELDS 64
#define DECLINE 1
#define FAILED 2  /* out of memory in the scan; a Python error set after it */

static locale_t c_numeric;  /* strtod_l's locale: "C" decimals whatever the process's */

typedef struct {
    uint64_t hash;
    const char *p;
    Py_ssize_t len;
    int32_t code;  /* -1: empty slot */
} Slot;

typedef struct {
    const char *p;
    Py_ssize_t len;
} Entry;

/* A chunk's distinct strings of one field: an open-addressing index into `entries`, which
 * point into the chunk in first-seen order (a code is an entry's position). Plain C memory
 * (PyMem_Raw*): the scan runs without the GIL; the Python strings are made (and their UTF-8
 * checked) after it, once per distinct string. */
typedef struct {
    Slot *slots;
    size_t mask;
    size_t used;
    Entry *entries;
    size_t cap;
    const char *limit;  /* the end of the chunk the strings are in */
} Table;

typedef struct {
    const char *key;
    Py_ssize_t key_len;
    char kind;
    char *out;
    uint8_t *nil;
    Table table;
} Field;

static inline uint64_t load8(const char *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* a[0:n] == b[0:n] for short strings (keys, values): word compares, no call. */
static inline int same(const char *a, const char *b, Py_ssize_t n) {
    while (n >= 8) {
        if (load8(a) != load8(b)) return 0;
        a += 8;
        b += 8;
        n -= 8;
    }
    while (n > 0) {
        if (*a++ != *b++) return 0;
        n--;
    }
    return 1;
}

/* A hash of p[0:n]; `limit` is the end of the buffer p points into. The last word is loaded
 * whole (overlapping, or masked when the buffer goes on): a word assembled byte by byte would
 * stall the load that reads it back. */
static inline uint64_t hash_bytes(const char *p, Py_ssize_t n, const char *limit) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (uint64_t)n;
    const char *q = p;
    Py_ssize_t m = n;
    while (m > 8) {
        h = (h ^ load8(q)) * 0xFF51AFD7ED558CCDULL;
        h ^= h >> 29;
        q += 8;
        m -= 8;
    }
    uint64_t w;
    if (n >= 8) {
        w = load8(p + n - 8);
    } else if (p + 8 <= limit) {
        w = load8(p) & ((1ULL << (8 * n)) - 1);
    } else {
        w = 0;
        for (Py_ssize_t i = 0; i < n; i++) w |= (uint64_t)(unsigned char)p[i] << (8 * i);
    }
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ULL;
    h ^= h >> 32;
    return h;
}

static int table_init(Table *t) {
    t->mask = 255;
    t->used = 0;
    t->cap = 128;
    t->slots = PyMem_RawMalloc(sizeof(Slot) * (t->mask + 1));
    t->entries = PyMem_RawMalloc(sizeof(Entry) * t->cap);
    if (!t->slots || !t->entries) return -1;
    for (size_t i = 0; i <= t->mask; i++) t->slots[i].code = -1;
    return 0;
}

/* Point a field at its output column and nil mask (writable buffers of at least `n_lines`
   values, each view kept in `views` for release) and set up its string table: 0, or -1 with
   an exception set. Shared by the JSON-lines and the CSV scanner. */
static int bind_field(Field *f, char kind, PyObject *out, PyObject *nil, Py_buffer *views,
                      int *n_views, Py_ssize_t n_lines, const char *end) {
    Py_ssize_t width = kind == 's' || kind == 'h' ? 4 : 8;
    Py_buffer *o = &views[*n_views];
    if (PyObject_GetBuffer(out, o, PyBUF_WRITABLE)) return -1;
    (*n_views)++;
    Py_buffer *m = &views[*n_views];
    if (PyObject_GetBuffer(nil, m, PyBUF_WRITABLE)) return -1;
    (*n_views)++;
    if (o->len < n_lines * width || m->len < n_lines) {
        PyErr_SetString(PyExc_ValueError, "an output buffer is shorter than the lines");
        return -1;
    }
    f->out = o->buf;
    f->nil = m->buf;
    f->kind = kind;
    f->table.limit = end;
    if ((f->kind == 's' || f->kind == 'h') && table_init(&f->table)) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}


static void table_free(Table *t) {
    PyMem_RawFree(t->slots);
    PyMem_RawFree(t->entries);
    t->slots = NULL;
    t->entries = NULL;
}

/* The field's distinct strings as a new list (0), DECLINE when one is not valid UTF-8, or
 * FAILED with a Python error set. Needs the GIL. */
static int table_strings(Table *t, PyObject **list) {
    *list = PyList_New((Py_ssize_t)t->used);
    if (!*list) return FAILED;
    for (size_t i = 0; i < t->used; i++) {
        PyObject *str = PyUnicode_DecodeUTF8(t->entries[i].p, t->entries[i].len, "strict");
        if (!str) {
            Py_CLEAR(*list);
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) return FAILED;
            PyErr_Clear();
            return DECLINE;
        }
        PyList_SET_ITEM(*list, (Py_ssize_t)i, str);
    }
    return 0;
}

static int table_grow(Table *t) {
    size_t mask = t->mask * 2 + 1;
    Slot *slots = PyMem_RawMalloc(sizeof(Slot) * (mask + 1));
    if (!slots) return -1;
    for (size_t i = 0; i <= mask; i++) slots[i].code = -1;
    for (size_t i = 0; i <= t->mask; i++) {
        Slot *s = &t->slots[i];
        if (s->code < 0) continue;
        size_t j = s->hash & mask;
        while (slots[j].code >= 0) j = (j + 1) & mask;
        slots[j] = *s;
    }
    PyMem_RawFree(t->slots);
    t->slots = slots;
    t->mask = mask;
    return 0;
}

/* The code of the string p[0:len]: -1 on a memory error, -2 past INT32_MAX strings. Needs
 * no GIL (UTF-8 is checked by table_strings). */
static int32_t table_code(Table *t, const char *p, Py_ssize_t len) {
    uint64_t h = hash_bytes(p, len, t->limit);
    size_t j = h & t->mask;
    for (;;) {
        Slot *s = &t->slots[j];
        if (s->code < 0) break;
        if (s->hash == h && s->len == len && same(s->p, p, len)) return s->code;
        j = (j + 1) & t->mask;
    }
    if (t->used >= INT32_MAX - 1) return -2;
    if (t->used == t->cap) {
        Entry *grown = PyMem_RawRealloc(t->entries, sizeof(Entry) * t->cap * 2);
        if (!grown) return -1;
        t->entries = grown;
        t->cap *= 2;
    }
    t->entries[t->used].p = p;
    t->entries[t->used].len = len;
    int32_t code = (int32_t)t->used++;
    Slot *s = &t->slots[j];
    s->hash = h;
    s->p = p;
    s->len = len;
    s->code = code;
    if (t->used * 2 > t->mask && table_grow(t)) return -1;
    return code;
}


static inline const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) p++;
    return p;
}

/* The end of a string's contents starting after its opening quote, or NULL to decline
 * (an escape, a control character, no closing quote on the line). */
static inline const char *string_end(const char *p, const char *end) {
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') return p;
        if (c == '\\' || c < 0x20) return NULL;
        p++;
    }
    return NULL;
}

/* A JSON number token from p: its end (NULL: not a valid JSON number); *integral says it has
 * no fraction and no exponent. */
static inline const char *number_end(const char *p, const char *end, int *integral) {
    const char *q = p;
    *integral = 1;
    if (q < end && *q == '-') q++;
    if (q >= end) return NULL;
    if (*q == '0') {
        q++;
    } else if (*q >= '1' && *q <= '9') {
        while (q < end && *q >= '0' && *q <= '9') q++;
    } else {
        return NULL;
    }
    if (q < end && *q == '.') {
        *integral = 0;
        q++;
        if (q >= end || *q < '0' || *q > '9') return NULL;
        while (q < end && *q >= '0' && *q <= '9') q++;
    }
    if (q < end && (*q == 'e' || *q == 'E')) {
        *integral = 0;
        q++;
        if (q < end && (*q == '+' || *q == '-')) q++;
        if (q >= end || *q < '0' || *q > '9') return NULL;
        while (q < end && *q >= '0' && *q <= '9') q++;
    }
    return q;
}

/* The unsigned magnitude of an integral token's digits; 0 on overflow (*ok = 0). */
static inline uint64_t digits_value(const char *p, const char *q, int *ok) {
    uint64_t v = 0;
    *ok = 1;
    if (q - p <= 19) {  /* below 10**19: no overflow, no checks (a division per digit) */
        for (; p < q; p++) v = v * 10 + (uint64_t)(*p - '0');
        return v;
    }
    for (; p < q; p++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) {
            *ok = 0;
            return 0;
        }
        v = v * 10 + d;
    }
    return v;
}

static int put_number(Field *f, Py_ssize_t row, const char *p, const char *q, int integral) {
    int neg = *p == '-';
    const char *digits = p + neg;
    if (f->kind == 'f') {
        double d;
        if (integral && q - digits <= 15) {
            int ok;
            d = (double)digits_value(digits, q, &ok);  /* exact: below 2**53 */
            if (neg) d = -d;
        } else {
            char buf[64];
            if (q - p >= (Py_ssize_t)sizeof(buf)) return DECLINE;
            memcpy(buf, p, (size_t)(q - p));
            buf[q - p] = 0;
            char *stop;
            d = strtod_l(buf, &stop, c_numeric);  /* correctly rounded (glibc); no GIL */
            if (stop != buf + (q - p) || !isfinite(d)) return DECLINE;
        }
        ((double *)f->out)[row] = d;
        return 0;
    }
    if (!integral) return DECLINE;
    int ok;
    uint64_t v = digits_value(digits, q, &ok);
    if (!ok) return DECLINE;
    if (f->kind == 'u') {
        if (neg && v) return DECLINE;
        ((uint64_t *)f->out)[row] = v;
        return 0;
    }
    int64_t s;
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1) return DECLINE;
        s = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    } else {
        if (v > (uint64_t)INT64_MAX) return DECLINE;
        s = (int64_t)v;
    }
    ((int64_t *)f->out)[row] = s;
    return 0;
}

static inline void put_nil(Field *f, Py_ssize_t row) {
    if (f->kind == 'x') return;
    f->nil[row] = 1;
    switch (f->kind) {
    case 's': case 'h': ((int32_t *)f->out)[row] = 0; break;
    case 'f': ((double *)f->out)[row] = 0.0; break;
    default: ((int64_t *)f->out)[row] = 0; break;
    }
}

static inline int match_field(Field *fields, int nf, const char *k, Py_ssize_t len, int guess) {
    if (guess < nf && fields[guess].key_len == len && same(fields[guess].key, k, len))
        return guess;
    for (int i = 0; i < nf; i++)
        if (fields[i].key_len == len && same(fields[i].key, k, len)) return i;
    return -1;
}

/* One flat object starting at p (no whitespace before it) into row `row`: 0, DECLINE or
 * FAILED; *after is the position after its closing brace. */
static int scan_object(Field *fields, int nf, int ignore_unknown, Py_ssize_t row, const char *p,
                       const char *end, const char **after) {
    uint64_t seen = 0;
    int guess = 0;
    if (p >= end || *p != '{') return DECLINE;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}') {
        p++;
    } else {
        for (;;) {
            if (p >= end || *p != '"') return DECLINE;
            const char *k = p + 1;
            const char *ke = string_end(k, end);
            if (!ke) return DECLINE;
            int fi = match_field(fields, nf, k, ke - k, guess);
            if (fi < 0 && !ignore_unknown) return DECLINE;
            if (fi >= 0) {
                if (seen & (1ULL << fi)) return DECLINE;
                seen |= 1ULL << fi;
                guess = fi + 1;
            }
            Field *f = fi >= 0 ? &fields[fi] : NULL;
            p = skip_ws(ke + 1, end);
            if (p >= end || *p != ':') return DECLINE;
            p = skip_ws(p + 1, end);
            if (p >= end) return DECLINE;
            char c = *p;
            if (c == '"') {
                const char *s = p + 1;
                const char *se = string_end(s, end);
                if (!se) return DECLINE;
                if (f && f->kind != 'x') {
                    if (f->kind != 's' && f->kind != 'h') return DECLINE;
                    int32_t code = table_code(&f->table, s, se - s);
                    if (code == -1) return FAILED;
                    if (code < 0) return DECLINE;
                    ((int32_t *)f->out)[row] = code;
                    f->nil[row] = 0;
                }
                p = se + 1;
            } else if (c == '-' || (c >= '0' && c <= '9')) {
                int integral;
                const char *q = number_end(p, end, &integral);
                if (!q) return DECLINE;
                if (f && f->kind == 'h') {
                    /* an identity: an integer is its text, which is its decimal text (JSON
                     * has no leading zeros) but for -0; a fraction or exponent: declined */
                    if (!integral || (q - p == 2 && p[0] == '-' && p[1] == '0')) return DECLINE;
                    int32_t code = table_code(&f->table, p, q - p);
                    if (code == -1) return FAILED;
                    if (code < 0) return DECLINE;
                    ((int32_t *)f->out)[row] = code;
                    f->nil[row] = 0;
                } else if (f && f->kind != 'x') {
                    if (f->kind == 's') return DECLINE;
                    int r = put_number(f, row, p, q, integral);
                    if (r) return r;
                    f->nil[row] = 0;
                }
                p = q;
            } else if (c == 'n' && end - p >= 4 && memcmp(p, "null", 4) == 0) {
                if (f) put_nil(f, row);
                p += 4;
            } else if (!f && c == 't' && end - p >= 4 && memcmp(p, "true", 4) == 0) {
                p += 4;
            } else if (!f && c == 'f' && end - p >= 5 && memcmp(p, "false", 5) == 0) {
                p += 5;
            } else {
                return DECLINE;  /* nested, true/false in a field, or not JSON */
            }
            p = skip_ws(p, end);
            if (p >= end) return DECLINE;
            if (*p == ',') {
                p = skip_ws(p + 1, end);
                continue;
            }
            if (*p != '}') return DECLINE;
            p++;
            break;
        }
    }
    for (int i = 0; i < nf; i++)
        if (!(seen & (1ULL << i))) put_nil(&fields[i], row);
    *after = p;
    return 0;
}

/* One line [p, end), exactly one object: 0, DECLINE or FAILED. */
static int scan_line(Field *fields, int nf, int ignore_unknown, Py_ssize_t row, const char *p,
                     const char *end) {
    int r = scan_object(fields, nf, ignore_unknown, row, skip_ws(p, end), end, &p);
    if (r) return r;
    return skip_ws(p, end) == end ? 0 : DECLINE;
}

/* The scanners' answer once the GIL is back: (rows, uniques), None when the chunk was
 * declined (`status` DECLINE, or a string that is not valid UTF-8), NULL on an error. */
static PyObject *answer(Field *fields, Py_ssize_t nf, Py_ssize_t rows, int status) {
    if (status == FAILED) return PyErr_NoMemory();
    if (status == DECLINE) Py_RETURN_NONE;
    PyObject *uniques = PyTuple_New(nf);
    if (!uniques) return NULL;
    for (Py_ssize_t i = 0; i < nf; i++) {
        PyObject *v = Py_None;
        if (fields[i].kind == 's' || fields[i].kind == 'h') {
            int r = table_strings(&fields[i].table, &v);
            if (r) {
                Py_DECREF(uniques);
                if (r == FAILED) return NULL;
                Py_RETURN_NONE;
            }
        } else {
            Py_INCREF(v);
        }
        PyTuple_SET_ITEM(uniques, i, v);
    }
    return Py_BuildValue("(nN)", rows, uniques);
}

/* A JSON array of flat objects [data, end) (whitespace around anything), row by row into
 * at most `cap` rows: 0, DECLINE or FAILED; *rows is the number of objects. */
static int scan_array_text(Field *fields, int nf, int ignore_unknown, const char *p,
                           const char *end, Py_ssize_t cap, Py_ssize_t *rows) {
    Py_ssize_t row = 0;
    p = skip_ws(p, end);
    if (p >= end || *p != '[') return DECLINE;
    p = skip_ws(p + 1, end);
    if (p < end && *p == ']') {
        p++;
    } else {
        for (;;) {
            if (row >= cap) return DECLINE;  /* never: each object has its brace */
            int r = scan_object(fields, nf, ignore_unknown, row, p, end, &p);
            if (r) return r;
            row++;
            p = skip_ws(p, end);
            if (p >= end) return DECLINE;
            if (*p == ']') {
                p++;
                break;
            }
            if (*p != ',') return DECLINE;
            p = skip_ws(p + 1, end);
        }
    }
    if (skip_ws(p, end) != end) return DECLINE;
    *rows = row;
    return 0;
}

static Py_ssize_t count_byte(const char *q, const char *end, char c) {
    Py_ssize_t n = 0;
    while (q < end && (q = memchr(q, c, (size_t)(end - q))) != NULL) {
        n++;
        q++;
    }
    return n;
}

static PyObject *scan_json(PyObject *args, int array) {
    PyObject *chunk_obj, *field_names, *outs, *nils;
    const char *kinds;
    Py_ssize_t n_kinds;
    int ignore_unknown;
    if (!PyArg_ParseTuple(args, "OO!y#O!O!p", &chunk_obj, &PyTuple_Type, &field_names, &kinds,
                          &n_kinds, &PyTuple_Type, &outs, &PyTuple_Type, &nils,
                          &ignore_unknown))
        return NULL;
    Py_ssize_t nf = PyTuple_GET_SIZE(field_names);
    if (nf > MAX_FIELDS || n_kinds != nf || PyTuple_GET_SIZE(outs) != nf ||
        PyTuple_GET_SIZE(nils) != nf) {
        PyErr_SetString(PyExc_ValueError, "fields, kinds, outs and nils must match (<= 64)");
        return NULL;
    }
    Py_buffer chunk;
    if (PyObject_GetBuffer(chunk_obj, &chunk, PyBUF_SIMPLE)) return NULL;
    Field fields[MAX_FIELDS];
    Py_buffer views[2 * MAX_FIELDS];
    int n_views = 0;
    PyObject *result = NULL;
    const char *data = chunk.buf, *end = data + chunk.len;
    Py_ssize_t n_lines = 0;  /* lines, or (array) an upper bound of the objects: the braces */
    if (array) {
        n_lines = count_byte(data, end, '{');
    } else {
        for (const char *q = data; q < end;) {
            const char *nl = memchr(q, '\n', (size_t)(end - q));
            n_lines++;
            if (!nl) break;
            q = nl + 1;
        }
    }
    for (Py_ssize_t i = 0; i < nf; i++) {
        fields[i].kind = 'x';
        fields[i].table.slots = NULL;
        fields[i].table.entries = NULL;
    }
    for (Py_ssize_t i = 0; i < nf; i++) {
        Field *f = &fields[i];
        PyObject *key = PyTuple_GET_ITEM(field_names, i);
        if (!PyBytes_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "field names must be bytes");
            goto done;
        }
        f->key = PyBytes_AS_STRING(key);
        f->key_len = PyBytes_GET_SIZE(key);
        f->out = NULL;
        f->nil = NULL;
        if (kinds[i] == 0 || !strchr("siufxh", kinds[i])) {
            PyErr_SetString(PyExc_ValueError, "a kind is one of s, i, u, f, x, h");
            goto done;
        }
        if (kinds[i] == 'x') continue;
        if (bind_field(f, kinds[i], PyTuple_GET_ITEM(outs, i), PyTuple_GET_ITEM(nils, i),
                       views, &n_views, n_lines, end)) goto done;
    }
    {
        int status = 0;
        Py_ssize_t rows = n_lines;
        const char *p = data;
        Py_BEGIN_ALLOW_THREADS
        if (array) {
            status = scan_array_text(fields, (int)nf, ignore_unknown, p, end, n_lines, &rows);
        } else {
            for (Py_ssize_t row = 0; row < n_lines; row++) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                const char *le = nl ? nl : end;
                status = scan_line(fields, (int)nf, ignore_unknown, row, p, le);
                if (status) break;
                p = le + 1;
            }
        }
        Py_END_ALLOW_THREADS
        result = answer(fields, nf, rows, status);
    }
done:
    for (Py_ssize_t i = 0; i < nf; i++) table_free(&fields[i].table);
    for (int i = 0; i < n_views; i++) PyBuffer_Release(&views[i]);
    PyBuffer_Release(&chunk);
    return result;
}

static PyObject *scan(PyObject *self, PyObject *args) { return scan_json(args, 0); }

static PyObject *scan_array(PyObject *self, PyObject *args) { return scan_json(args, 1); }

/* -- CSV ------------------------------------------------------------------------------------
 * scan_csv(chunk, n_columns, columns, kinds, outs, nils) -> tuple | None
 *
 *   The same for CSV lines without a header (the caller knows it): every line must have
 *   exactly `n_columns` comma-separated fields; `columns` (a tuple of ints) are the positions
 *   of the fields read, with `kinds`, `outs` and `nils` as for `scan` ('x' not allowed). An
 *   empty field (or "") is null. A string may be quoted when it holds no quote; numbers are
 *   JSON numbers, unquoted ('u': no sign). Declined: a blank line, another number of fields, a
 *   quote anywhere else, a carriage return but before the newline, a number that is not
 *   plain, a string that is not valid UTF-8. pyarrow's CSV reader then decides the chunk.
 */
static int csv_value(Field *f, Py_ssize_t row, const char *p, const char *q) {
    if (p == q) {
        put_nil(f, row);
        return 0;
    }
    if (f->kind == 's') {
        if (*p == '"') {
            p++;
            q--;
            if (p == q) {
                put_nil(f, row);
                return 0;
            }
        }
        int32_t code = table_code(&f->table, p, q - p);
        if (code == -1) return FAILED;
        if (code < 0) return DECLINE;
        ((int32_t *)f->out)[row] = code;
        f->nil[row] = 0;
        return 0;
    }
    if (f->kind == 'u' && *p == '-') return DECLINE;
    int integral;
    const char *e = number_end(p, q, &integral);
    if (e != q) return DECLINE;
    int r = put_number(f, row, p, q, integral);
    if (r) return r;
    f->nil[row] = 0;
    return 0;
}

static int csv_line(Field *fields, const int *slot_of, Py_ssize_t n_columns, Py_ssize_t row,
                    const char *p, const char *end) {
    if (end > p && end[-1] == '\r') end--;
    if (p == end) return DECLINE;  /* blank */
    Py_ssize_t col = 0;
    for (;;) {
        const char *start = p;
        if (p < end && *p == '"') {
            p++;
            while (p < end && *p != '"') {
                if (*p == '\r') return DECLINE;
                p++;
            }
            if (p >= end) return DECLINE;
            p++;  /* the closing quote: a field separator or the end must follow */
            if (p < end && *p != ',') return DECLINE;
        } else {
            while (p < end && *p != ',') {
                if (*p == '"' || *p == '\r') return DECLINE;
                p++;
            }
        }
        if (col >= n_columns) return DECLINE;
        int slot = slot_of[col];
        if (slot >= 0) {
            int r = csv_value(&fields[slot], row, start, p);
            if (r) return r;
        }
        col++;
        if (p >= end) break;
        p++;  /* the comma */
    }
    return col == n_columns ? 0 : DECLINE;
}

static PyObject *scan_csv(PyObject *self, PyObject *args) {
    PyObject *chunk_obj, *columns, *outs, *nils;
    Py_ssize_t n_columns;
    const char *kinds;
    Py_ssize_t n_kinds;
    if (!PyArg_ParseTuple(args, "OnO!y#O!O!", &chunk_obj, &n_columns, &PyTuple_Type, &columns,
                          &kinds, &n_kinds, &PyTuple_Type, &outs, &PyTuple_Type, &nils))
        return NULL;
    Py_ssize_t nf = PyTuple_GET_SIZE(columns);
    if (nf > MAX_FIELDS || n_kinds != nf || PyTuple_GET_SIZE(outs) != nf ||
        PyTuple_GET_SIZE(nils) != nf || n_columns < 1 || n_columns > 4096) {
        PyErr_SetString(PyExc_ValueError, "columns, kinds, outs and nils must match");
        return NULL;
    }
    Py_buffer chunk;
    if (PyObject_GetBuffer(chunk_obj, &chunk, PyBUF_SIMPLE)) return NULL;
    Field fields[MAX_FIELDS];
    Py_buffer views[2 * MAX_FIELDS];
    int n_views = 0;
    int *slot_of = NULL;
    PyObject *result = NULL;
    const char *data = chunk.buf, *end = data + chunk.len;
    Py_ssize_t n_lines = 0;
    for (const char *q = data; q < end;) {
        const char *nl = memchr(q, '\n', (size_t)(end - q));
        n_lines++;
        if (!nl) break;
        q = nl + 1;
    }
    for (Py_ssize_t i = 0; i < nf; i++) {
        fields[i].kind = 'x';
        fields[i].table.slots = NULL;
        fields[i].table.entries = NULL;
    }
    slot_of = PyMem_Malloc(sizeof(int) * (size_t)n_columns);
    if (!slot_of) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t c = 0; c < n_columns; c++) slot_of[c] = -1;
    for (Py_ssize_t i = 0; i < nf; i++) {
        Field *f = &fields[i];
        Py_ssize_t c = PyLong_AsSsize_t(PyTuple_GET_ITEM(columns, i));
        if (c == -1 && PyErr_Occurred()) goto done;
        if (c < 0 || c >= n_columns || slot_of[c] >= 0 || kinds[i] == 0 ||
            !strchr("siuf", kinds[i])) {
            PyErr_SetString(PyExc_ValueError, "a column outside the header, or a bad kind");
            goto done;
        }
        slot_of[c] = (int)i;
        f->key = NULL;
        f->key_len = 0;
        if (bind_field(f, kinds[i], PyTuple_GET_ITEM(outs, i), PyTuple_GET_ITEM(nils, i),
                       views, &n_views, n_lines, end)) goto done;
    }
    {
        int status = 0;
        const char *p = data;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t row = 0; row < n_lines; row++) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *le = nl ? nl : end;
            status = csv_line(fields, slot_of, n_columns, row, p, le);
            if (status) break;
            p = le + 1;
        }
        Py_END_ALLOW_THREADS
        result = answer(fields, nf, n_lines, status);
    }
done:
    for (Py_ssize_t i = 0; i < nf; i++) table_free(&fields[i].table);
    for (int i = 0; i < n_views; i++) PyBuffer_Release(&views[i]);
    PyMem_Free(slot_of);
    PyBuffer_Release(&chunk);
    return result;
}

/* lines(chunk) -> int: the number of lines (newlines, plus one for a last line without its
 * newline), as the scanner counts them; memchr, several times faster than bytes.count. */
static PyObject *lines(PyObject *self, PyObject *arg) {
    Py_buffer chunk;
    if (PyObject_GetBuffer(arg, &chunk, PyBUF_SIMPLE)) return NULL;
    const char *q = chunk.buf, *end = q + chunk.len;
    Py_ssize_t n = 0;
    while (q < end) {
        const char *nl = memchr(q, '\n', (size_t)(end - q));
        n++;
        if (!nl) break;
        q = nl + 1;
    }
    PyBuffer_Release(&chunk);
    return PyLong_FromSsize_t(n);
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "JSON lines of flat objects -> columns (None: declined)."},
    {"scan_array", scan_array, METH_VARARGS,
     "A JSON array of flat objects -> columns (None: declined)."},
    {"lines", lines, METH_O, "The number of lines of a chunk."},
    {"scan_csv", scan_csv, METH_VARARGS, "CSV lines -> columns (None: declined)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "gumshoe._jsonl", NULL, -1, methods};

PyMODINIT_FUNC PyInit__jsonl(void) {
    c_numeric = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (!c_numeric) return PyErr_NoMemory();
    return PyModule_Create(&module);
}
