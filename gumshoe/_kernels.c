/* gumshoe._kernels: the fused scan kernel of the query engine (gumshoe/engine.py).
 *
 * accumulate(base, k, parts, mask, columns, accs[, ops])
 *
 *   One pass over a block's rows, in chunks that stay in the L1 cache: the selected rows (mask),
 *   their group key (a mixed-radix sum over the grouping parts) and, for each column, acc[key] +=
 *   value (or, for a min/max column, acc[key] = min/max(acc[key], value)). It replaces numpy's
 *   flatnonzero + take + key arithmetic + one bincount per metric (each a full pass with a
 *   temporary array, and float64 weights) with one pass and no temporaries. The numpy path
 *   stays in engine.py; tests compare the two.
 *
 *   base    int: the key of every row before the parts are added (constant time codes).
 *   k       int: the accumulators' length; every key must lie in [0, k) (checked).
 *   parts   sequence of (codes, offset, stride, nil): key += (codes[i] - offset) * stride, or
 *           += 0 where nil[i]; codes any integer type, nil a bool array or None.
 *   mask    bool array, None (all rows), or a list: a filter program over the block's columns
 *           (_predicate.h), evaluated chunk by chunk in the same pass.
 *   columns sequence of arrays (int64, uint64 or float64), each with its accumulator in accs
 *           (the same type, length k, writable). Integer sums wrap like numpy's (two's
 *           complement); the engine bounds them.
 *   ops     optional bytes, one per column: 0 sum, 1 min, 2 max (metric kinds, kinds.py; the
 *           accumulators of min/max columns start at the kind's identity). With a min/max
 *           column no lanes are used.
 *
 * Buffers are taken through the buffer protocol (C-contiguous, 1-d), so numpy arrays over
 * read-only mmaps work; the GIL is released for the loop.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "_buffer.h"
#include "_predicate.h"
#include <stdint.h>
#include <string.h>

/* Rows per chunk. A chunk's keys, row positions, widened columns and filter masks must stay
 * in L1 together: at 1024 rows they took ~40 KB (over the 32 KB L1 of this machine's EPYC) and
 * a group-by over 22M rows of narrow columns ran 54 ms; at 256, 36 ms. */
#define CHUNK 256
#define MAX_PARTS 64
#define MAX_COLUMNS 256



static int get_buffer(PyObject *obj, Py_buffer *view, int writable, const char *what) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) return -1;
    if (view->ndim > 1) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "%s: expected a 1-d array", what);
        return -1;
    }
    return 0;
}

typedef struct {
    Py_buffer codes, nil;
    int has_nil, type;
    int64_t offset, stride;
} Part;

typedef struct {
    Py_buffer values, acc;
    int type;
    void *lanes;  /* NULL, or LANES * k accumulators (8 bytes each) */
    void *target; /* where the sums go: lanes, or the accumulator itself */
    uint64_t *wide; /* a narrow integer column: its chunk widened to 64 bits, else NULL */
    const void *cur; /* the current chunk's values, 64 bits each (row j of the chunk: cur[j]) */
    int op;       /* OP_SUM, OP_MIN or OP_MAX */
    int acc_type; /* T_I64, T_U64 or T_F64 */
} Column;

enum { OP_SUM = 0, OP_MIN = 1, OP_MAX = 2 };

/* The scan loop is compiled twice (CLONES, _buffer.h): for AVX2 (4-wide widening, adds and
 * compares; masked scans run 15-30% faster in-cache) and for the baseline. */

#define LANES 4
#define MAX_LANE_K 1024 /* lanes only while LANES copies of a column stay in L1/L2 */

/* key[j] = (FIRST ? base : key[j]) + contribution of row ROW(j) for one part, specialised
 * per code type; the LAST part also folds the range check into the same loop (out gets a sign
 * bit iff some key is outside [0, k)), so the keys are not read again for it. The part's
 * fields are copied to locals so the stores to key[] cannot alias them. */
#define PART_LOOP_S(CTYPE, FIRST, LAST, ST)                                                \
    do {                                                                                   \
        const CTYPE *restrict c = (const CTYPE *)p->codes.buf;                             \
        const int64_t off = p->offset;                                                     \
        if (p->has_nil) {                                                                  \
            const uint8_t *restrict nl = (const uint8_t *)p->nil.buf;                      \
            for (Py_ssize_t j = 0; j < cnt; j++) {                                         \
                const Py_ssize_t r = ROW(j);                                               \
                const int64_t v = (FIRST ? base : key[j]) +                                \
                                  (((int64_t)c[r] - off) * (ST) & -(int64_t)(nl[r] == 0)); \
                key[j] = v;                                                                \
                if (LAST) out |= v | (k - 1 - v);                                          \
            }                                                                              \
        } else {                                                                           \
            for (Py_ssize_t j = 0; j < cnt; j++) {                                         \
                const int64_t v = (FIRST ? base : key[j]) + ((int64_t)c[ROW(j)] - off) * (ST); \
                key[j] = v;                                                                \
                if (LAST) out |= v | (k - 1 - v);                                          \
            }                                                                              \
        }                                                                                  \
    } while (0)
/* A stride of 1 (the last grouping) gets its own loop: without the multiply, which SSE2 can
 * only emulate for 64-bit integers, the loop is a widen and a subtract. */
#define PART_LOOP(CTYPE, FIRST, LAST)                                                      \
    do {                                                                                   \
        const int64_t st = p->stride;                                                      \
        if (st == 1)                                                                       \
            PART_LOOP_S(CTYPE, FIRST, LAST, 1);                                            \
        else                                                                               \
            PART_LOOP_S(CTYPE, FIRST, LAST, st);                                           \
    } while (0)

/* The group keys of a chunk's rows; returns nonzero iff one lies outside [0, k). */
HOT_INLINE int add_parts(Part *parts, Py_ssize_t nparts, int64_t *restrict key,
                            const Py_ssize_t *restrict idx, Py_ssize_t start, Py_ssize_t cnt,
                            int dense, const int64_t base, const int64_t k) {
    int64_t out = 0;
    for (Py_ssize_t q = 0; q < nparts; q++) {
        Part *p = &parts[q];
#define ROW(j) (dense ? start + (j) : idx[j])
#define PL11(C, W, U) PART_LOOP(C, 1, 1)
#define PL10(C, W, U) PART_LOOP(C, 1, 0)
#define PL01(C, W, U) PART_LOOP(C, 0, 1)
#define PL00(C, W, U) PART_LOOP(C, 0, 0)
#define SWITCH(FIRST, LAST) switch (p->type) { INT_TYPE_CASES(PL##FIRST##LAST) }
        const int first = q == 0, last = q == nparts - 1;
        if (first && last) {
            SWITCH(1, 1)
        } else if (first) {
            SWITCH(1, 0)
        } else if (last) {
            SWITCH(0, 1)
        } else {
            SWITCH(0, 0)
        }
#undef SWITCH
#undef ROW
    }
    return out < 0;
}

/* acc[key[j]] += v[row j] for every column. Integer columns (int64 and uint64 add alike,
 * modulo 2**64: no undefined overflow) go three (or two) at a time through one loop, so each key is
 * loaded once and the three updates overlap; float columns go one at a time. `target` is the
 * column's lanes when they are in use: the loop is unrolled by LANES and row j of each group of
 * four adds lane offset (j % 4) * ls, constants in registers (ls = 0 without lanes; a leftover
 * row may use any lane, since the lanes are summed). Adding the offsets here rather than in a
 * pass over the keys saves a read-modify-write of every key (in-cache: 1.9 -> 1.3 ns/row). The
 * accumulators of different columns are distinct arrays (restrict). */
#define FUSED(BODY)                                                                        \
    do {                                                                                   \
        const int64_t o1 = ls, o2 = 2 * ls, o3 = 3 * ls;                                   \
        Py_ssize_t j = 0;                                                                  \
        if (dense) {                                                                       \
            for (; j + 4 <= cnt; j += 4) {                                                 \
                BODY(key[j], j) BODY(key[j + 1] + o1, j + 1)                               \
                BODY(key[j + 2] + o2, j + 2) BODY(key[j + 3] + o3, j + 3)                  \
            }                                                                              \
            for (; j < cnt; j++) { BODY(key[j], j) }                                       \
        } else {                                                                           \
            for (; j + 4 <= cnt; j += 4) {                                                 \
                BODY(key[j], idx[j] - start) BODY(key[j + 1] + o1, idx[j + 1] - start)     \
                BODY(key[j + 2] + o2, idx[j + 2] - start)                                  \
                BODY(key[j + 3] + o3, idx[j + 3] - start)                                  \
            }                                                                              \
            for (; j < cnt; j++) { BODY(key[j], idx[j] - start) }                          \
        }                                                                                  \
    } while (0)
#define ADD3(K, R) { const int64_t kk = (K); const Py_ssize_t rr = (R);                   \
                     a0[kk] += v0[rr]; a1[kk] += v1[rr]; a2[kk] += v2[rr]; }
#define ADD2(K, R) { const int64_t kk = (K); const Py_ssize_t rr = (R);                   \
                     a0[kk] += v0[rr]; a1[kk] += v1[rr]; }
#define ADD1(K, R) { a[(K)] += v[(R)]; }

HOT_INLINE void add_columns(Column *cols, Py_ssize_t ncols, const int64_t *restrict key,
                               const Py_ssize_t *restrict idx, Py_ssize_t start, Py_ssize_t cnt,
                               int dense, const int64_t ls) {
    Py_ssize_t q = 0;
    for (; q + 3 <= ncols && cols[q + 2].type != T_F64; q += 3) {
        if (cols[q].type == T_F64 || cols[q + 1].type == T_F64) break;
        uint64_t *restrict a0 = cols[q].target, *restrict a1 = cols[q + 1].target;
        uint64_t *restrict a2 = cols[q + 2].target;
        const uint64_t *restrict v0 = cols[q].cur, *restrict v1 = cols[q + 1].cur;
        const uint64_t *restrict v2 = cols[q + 2].cur;
        FUSED(ADD3);
    }
    if (q + 2 <= ncols && cols[q].type != T_F64 && cols[q + 1].type != T_F64) {
        uint64_t *restrict a0 = cols[q].target, *restrict a1 = cols[q + 1].target;
        const uint64_t *restrict v0 = cols[q].cur, *restrict v1 = cols[q + 1].cur;
        FUSED(ADD2);
        q += 2;
    }
    for (; q < ncols; q++) {
        Column *col = &cols[q];
        if (col->type == T_F64) {
            double *restrict a = col->target;
            const double *restrict v = col->cur;
            FUSED(ADD1);
        } else {
            uint64_t *restrict a = col->target;
            const uint64_t *restrict v = col->cur;
            FUSED(ADD1);
        }
    }
}

/* acc[key[j]] = min/max(acc[key[j]], v[row j]) for the min/max columns (after the sums in
 * `cols`), one column at a time; compared in the accumulator's type. */
#define EXTREME(CTYPE)                                                             \
    do {                                                                                   \
        CTYPE *restrict a = col->target;                                                   \
        const CTYPE *restrict v = col->cur;                                                \
        FUSED(EXT1);                                                                       \
    } while (0)
#define EXT1(K, R) { const int64_t kk = (K); const __typeof__(*v) x = v[(R)];              \
                     a[kk] = BETTER_OP(x, a[kk]) ? x : a[kk]; }
HOT_INLINE void extreme_columns(Column *cols, Py_ssize_t ncols, const int64_t *restrict key,
                                const Py_ssize_t *restrict idx, Py_ssize_t start,
                                Py_ssize_t cnt, int dense) {
    const int64_t ls = 0;
    for (Py_ssize_t q = 0; q < ncols; q++) {
        Column *col = &cols[q];
        if (col->op == OP_MIN) {
#define BETTER_OP(x, y) ((x) < (y))
            switch (col->acc_type) {
            case T_I64: EXTREME(int64_t); break;
            case T_U64: EXTREME(uint64_t); break;
            default: EXTREME(double); break;
            }
#undef BETTER_OP
        } else {
#define BETTER_OP(x, y) ((x) > (y))
            switch (col->acc_type) {
            case T_I64: EXTREME(int64_t); break;
            case T_U64: EXTREME(uint64_t); break;
            default: EXTREME(double); break;
            }
#undef BETTER_OP
        }
    }
}

/* v if the mask byte is set, else 0, without a branch (the mask is unpredictable). Floats by
 * their bits: all-zero bits are +0.0. */
#define PICK_INT(x, b) ((uint64_t)(x) & (uint64_t)-(int64_t)((b) != 0))
static inline double pick_float(double x, uint8_t b) {
    uint64_t u;
    memcpy(&u, &x, 8);
    u &= (uint64_t)-(int64_t)(b != 0);
    memcpy(&x, &u, 8);
    return x;
}
#define PICK_FLOAT(x, b) pick_float((x), (b))

/* Four independent accumulators: the adds pipeline (and vectorise for integers). */
#define PLAIN_SUM(VTYPE, ATYPE, PICK)                                                          \
    do {                                                                                   \
        const VTYPE *v = (const VTYPE *)col->values.buf + start;                           \
        ATYPE s0 = 0, s1 = 0, s2 = 0, s3 = 0;                                              \
        Py_ssize_t i = 0;                                                                  \
        if (m) {                                                                           \
            for (; i + 4 <= n; i += 4) {                                                   \
                s0 += PICK(v[i], m[i]);                                       \
                s1 += PICK(v[i + 1], m[i + 1]);                               \
                s2 += PICK(v[i + 2], m[i + 2]);                               \
                s3 += PICK(v[i + 3], m[i + 3]);                               \
            }                                                                              \
            for (; i < n; i++) s0 += PICK(v[i], m[i]);                        \
        } else {                                                                           \
            for (; i + 4 <= n; i += 4) {                                                   \
                s0 += (ATYPE)v[i];                                                         \
                s1 += (ATYPE)v[i + 1];                                                     \
                s2 += (ATYPE)v[i + 2];                                                     \
                s3 += (ATYPE)v[i + 3];                                                     \
            }                                                                              \
            for (; i < n; i++) s0 += (ATYPE)v[i];                                          \
        }                                                                                  \
        ((ATYPE *)col->acc.buf)[base] += (s0 + s1) + (s2 + s3);                            \
    } while (0)

#define SUM_INT(C, W, U) PLAIN_SUM(C, uint64_t, PICK_INT)
HOT_INLINE void sum_range(Column *cols, Py_ssize_t ncols, const uint8_t *m, Py_ssize_t start,
                      Py_ssize_t n, int64_t base) {
    for (Py_ssize_t q = 0; q < ncols; q++) {
        Column *col = &cols[q];
        switch (col->type) {
        INT_TYPE_CASES(SUM_INT)
        case T_F64: PLAIN_SUM(double, double, PICK_FLOAT); break;
        }
    }
}

/* Point each column's `cur` at rows [start, start + len): 64-bit columns in place, narrow
 * integer columns widened into their chunk buffer (signed ones sign-extended), so the scatter
 * loops read 64-bit values whatever width the segment stored. */
#define WIDEN(CTYPE, WIDE, UTYPE)                                                          \
    do {                                                                                   \
        const CTYPE *restrict c = (const CTYPE *)col->values.buf + start;                  \
        if (sizeof(CTYPE) == 8) {                                                          \
            col->cur = c;                                                                  \
        } else {                                                                           \
            uint64_t *restrict w = col->wide;                                              \
            for (Py_ssize_t i = 0; i < len; i++) w[i] = (uint64_t)(WIDE)c[i];              \
            col->cur = w;                                                                  \
        }                                                                                  \
    } while (0)
HOT_INLINE void load_chunk(Column *cols, Py_ssize_t ncols, Py_ssize_t start, Py_ssize_t len) {
    for (Py_ssize_t q = 0; q < ncols; q++) {
        Column *col = &cols[q];
        switch (col->type) {
        INT_TYPE_CASES(WIDEN)
        default: col->cur = (const double *)col->values.buf + start; /* float64 */
        }
    }
}

/* Every row has the key `base`: plain sums, masked by `m` or by the filter program chunk by
 * chunk (GIL released). */
CLONES static void sum_all(Column *cols, Py_ssize_t ncols, const uint8_t *m, const Program *pg,
                           Py_ssize_t n, int64_t base) {
    if (!pg) {
        sum_range(cols, ncols, m, 0, n, base);
        return;
    }
    for (Py_ssize_t start = 0; start < n; start += CHUNK) {
        const Py_ssize_t len = n - start < CHUNK ? n - start : CHUNK;
        sum_range(cols, ncols, program_eval(pg, start, len), start, len, base);
    }
}

/* Lanes hold LANES copies of k + 1 accumulators: slot k of each is the "trash" group that
 * unselected rows of a mostly selected chunk are summed into (and then ignored). */
static void fold_lanes(Column *col, Py_ssize_t k) {
    if (!col->lanes) return;
    const Py_ssize_t s = k + 1;
    if (col->type == T_F64) {
        double *a = (double *)col->acc.buf, *l = (double *)col->lanes;
        for (Py_ssize_t g = 0; g < k; g++) a[g] += (l[g] + l[s + g]) + (l[2 * s + g] + l[3 * s + g]);
    } else {
        uint64_t *a = (uint64_t *)col->acc.buf, *l = (uint64_t *)col->lanes;
        for (Py_ssize_t g = 0; g < k; g++) a[g] += l[g] + l[s + g] + l[2 * s + g] + l[3 * s + g];
    }
}

/* idx[0..count) = start + the positions of the set mask bytes; returns count. Branch-free
 * (the mask is unpredictable). Not inlined on purpose: inside the large scan_rows GCC kept
 * every variable of this loop on the stack (one store and two reloads per row). */
NO_INLINE Py_ssize_t compact(const uint8_t *restrict mc, Py_ssize_t start, Py_ssize_t len,
                              Py_ssize_t *restrict idx) {
    Py_ssize_t c = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        idx[c] = start + i;
        c += mc[i] != 0;
    }
    return c;
}

/* The chunked scan (GIL released). The selected rows are those of the mask `m`, or of the
 * filter program `pg` evaluated chunk by chunk, or all. Every argument is a by-value local, so
 * the stores to the key and accumulator arrays cannot alias them and the simple loops
 * vectorise. Returns 1 when a key falls outside [0, k). */
CLONES static int scan_rows(Part *parts, Py_ssize_t nparts, Column *cols, Py_ssize_t ncols,
                            Py_ssize_t nsums, const uint8_t *m, const Program *pg,
                            const Py_ssize_t n, const int64_t base, const int64_t k) {
    int64_t key[CHUNK];
    Py_ssize_t idx[CHUNK];
    const int lanes = cols[0].lanes != NULL;
    for (Py_ssize_t start = 0; start < n; start += CHUNK) {
        Py_ssize_t len = n - start < CHUNK ? n - start : CHUNK, cnt = len;
        int dense = 1, trash = 0;
        const uint8_t *mc = pg ? program_eval(pg, start, len) : m ? m + start : NULL;
        if (mc) {
            cnt = 0;
            for (Py_ssize_t i = 0; i < len; i++) cnt += mc[i] != 0;
            if (cnt == 0) continue;
            if (cnt < len) {
                if (lanes && cnt * 4 >= len) {
                    /* mostly selected: scan every row (sequential loads, no gathers) and send
                     * the unselected ones to the trash slot */
                    trash = 1;
                    cnt = len;
                } else {
                    dense = 0;
                    cnt = compact(mc, start, len, idx);
                }
            }
        }
        if (nparts == 0) {  /* min/max columns without parts: every row has the key `base` */
            for (Py_ssize_t j = 0; j < cnt; j++) key[j] = base;
        } else if (dense ? add_parts(parts, nparts, key, idx, start, cnt, 1, base, k)
                         : add_parts(parts, nparts, key, idx, start, cnt, 0, base, k)) {
            return 1;
        }
        if (trash) {
            for (Py_ssize_t j = 0; j < cnt; j++) {
                const int64_t keep = -(int64_t)(mc[j] != 0);
                key[j] = (key[j] & keep) | (k & ~keep);
            }
        }
        load_chunk(cols, ncols, start, len);
        add_columns(cols, nsums, key, idx, start, cnt, dense, lanes ? k + 1 : 0);
        if (nsums < ncols)
            extreme_columns(cols + nsums, ncols - nsums, key, idx, start, cnt, dense);
    }
    for (Py_ssize_t q = 0; q < ncols; q++) fold_lanes(&cols[q], k);
    return 0;
}

static PyObject *accumulate(PyObject *self, PyObject *args) {
    long long base, k;
    PyObject *parts_obj, *mask_obj, *cols_obj, *accs_obj;
    Py_buffer ops = {0};
    if (!PyArg_ParseTuple(args, "LLOOOO|y*:accumulate", &base, &k, &parts_obj, &mask_obj,
                          &cols_obj, &accs_obj, &ops))
        return NULL;
    const uint8_t *op_of = ops.buf;  /* NULL: every column is a sum */
    if (op_of && ops.len != PySequence_Size(cols_obj)) {
        PyBuffer_Release(&ops);
        PyErr_SetString(PyExc_ValueError, "accumulate: ops must have one byte per column");
        return NULL;
    }
    PyObject *parts_seq = PySequence_Fast(parts_obj, "parts must be a sequence");
    if (!parts_seq) {
        if (op_of) PyBuffer_Release(&ops);
        return NULL;
    }
    PyObject *cols_seq = PySequence_Fast(cols_obj, "columns must be a sequence");
    PyObject *accs_seq = cols_seq ? PySequence_Fast(accs_obj, "accs must be a sequence") : NULL;
    Part parts[MAX_PARTS];
    Column cols[MAX_COLUMNS];
    Py_buffer mask;
    Program prog;
    int has_mask = 0, has_prog = 0;
    Py_ssize_t nparts = 0, ncols = 0, n = -1, nsums = 0;
    PyObject *result = NULL;
    if (!accs_seq) goto done;
    Py_ssize_t want_parts = PySequence_Fast_GET_SIZE(parts_seq);
    Py_ssize_t want_cols = PySequence_Fast_GET_SIZE(cols_seq);
    if (want_parts > MAX_PARTS || want_cols > MAX_COLUMNS || want_cols == 0 ||
        PySequence_Fast_GET_SIZE(accs_seq) != want_cols || k <= 0) {
        PyErr_SetString(PyExc_ValueError, "accumulate: bad number of parts, columns or k");
        goto done;
    }
    /* the sums first (add_columns takes them three at a time), the min/max columns after */
    for (Py_ssize_t pass = 0; pass < 2; pass++)
    for (Py_ssize_t i = 0; i < want_cols; i++) {
        const int op = op_of ? op_of[i] : OP_SUM;
        if ((op != OP_SUM) != pass) continue;
        if (op > OP_MAX) {
            PyErr_SetString(PyExc_ValueError, "accumulate: an op must be 0 (sum), 1 or 2");
            goto done;
        }
        Column *c = &cols[ncols];
        c->lanes = NULL;
        c->target = NULL;
        c->wide = NULL;
        c->op = op;
        if (get_buffer(PySequence_Fast_GET_ITEM(cols_seq, i), &c->values, 0, "column") < 0)
            goto done;
        if (get_buffer(PySequence_Fast_GET_ITEM(accs_seq, i), &c->acc, 1, "acc") < 0) {
            PyBuffer_Release(&c->values);
            goto done;
        }
        ncols++;
        nsums += op == OP_SUM;
        c->type = type_of(&c->values);
        Py_ssize_t len = c->values.len / c->values.itemsize;
        if (n < 0) n = len;
        const int acc_type = c->type == T_F64 ? T_F64 : is_signed_type(c->type) ? T_I64 : T_U64;
        c->acc_type = acc_type;
        if (c->type == T_BAD || c->type == T_BOOL || c->type == T_F32 || c->type >= T_STR ||
            type_of(&c->acc) != acc_type || len != n ||
            c->acc.len / c->acc.itemsize != (Py_ssize_t)k) {
            PyErr_SetString(PyExc_ValueError,
                            "accumulate: columns must be integers or float64 of equal length, "
                            "each with an accumulator of length k (int64 for signed, uint64 for "
                            "unsigned integers, float64 for float64)");
            goto done;
        }
    }
    for (; nparts < want_parts; nparts++) {
        PyObject *t = PySequence_Fast_GET_ITEM(parts_seq, nparts);
        PyObject *codes, *nil;
        long long offset, stride;
        Part *p = &parts[nparts];
        if (!PyArg_ParseTuple(t, "OLLO:part", &codes, &offset, &stride, &nil)) goto done;
        if (get_buffer(codes, &p->codes, 0, "codes") < 0) goto done;
        p->has_nil = nil != Py_None;
        if (p->has_nil && get_buffer(nil, &p->nil, 0, "nil") < 0) {
            PyBuffer_Release(&p->codes);
            goto done;
        }
        p->type = type_of(&p->codes);
        p->offset = offset;
        p->stride = stride;
        if (!is_int_type(p->type) ||
            p->codes.len / p->codes.itemsize != n ||
            (p->has_nil && (p->nil.itemsize != 1 || p->nil.len != n))) {
            nparts++;
            PyErr_SetString(PyExc_ValueError,
                            "accumulate: part codes must be integers (nil: bool) of n rows");
            goto done;
        }
    }
    if (PyList_Check(mask_obj)) {  /* a filter program (filters.py) */
        if (program_parse(mask_obj, n, CHUNK, &prog) < 0) goto done;
        has_prog = 1;
    } else if (mask_obj != Py_None) {
        if (get_buffer(mask_obj, &mask, 0, "mask") < 0) goto done;
        has_mask = 1;
        if (mask.itemsize != 1 || mask.len != n) {
            PyErr_SetString(PyExc_ValueError, "accumulate: mask must be a bool array of n rows");
            goto done;
        }
    }

    if (nparts == 0 && (base < 0 || base >= k)) {
        PyErr_SetString(PyExc_ValueError, "accumulate: a group key is outside [0, k)");
        goto done;
    }
    if (nparts == 0 && nsums == ncols) {  /* every row has the key `base`: plain (masked) sums
                                           * in registers */
        if (base < 0 || base >= k) {
            PyErr_SetString(PyExc_ValueError, "accumulate: a group key is outside [0, k)");
            goto done;
        }
        Py_BEGIN_ALLOW_THREADS
        sum_all(cols, ncols, has_mask ? (const uint8_t *)mask.buf : NULL,
                has_prog ? &prog : NULL, n, base);
        Py_END_ALLOW_THREADS
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }

    /* the copies cost k * LANES adds to fold; min/max columns take none (nor the trash slot) */
    if (k <= MAX_LANE_K && k * LANES * 4 <= n && nsums == ncols) {
        for (Py_ssize_t q = 0; q < ncols; q++) {
            cols[q].lanes = PyMem_Calloc((size_t)(k + 1) * LANES, 8);
            if (!cols[q].lanes) {
                PyErr_NoMemory();
                goto done;
            }
        }
    }
    for (Py_ssize_t q = 0; q < ncols; q++) {
        cols[q].target = cols[q].lanes ? cols[q].lanes : cols[q].acc.buf;
        if (cols[q].values.itemsize < 8) {
            cols[q].wide = PyMem_Malloc(CHUNK * sizeof(uint64_t));
            if (!cols[q].wide) {
                PyErr_NoMemory();
                goto done;
            }
        }
    }
    int bad_key;
    Py_BEGIN_ALLOW_THREADS
    bad_key = scan_rows(parts, nparts, cols, ncols, nsums,
                        has_mask ? (const uint8_t *)mask.buf : NULL, has_prog ? &prog : NULL, n,
                        base, k);
    Py_END_ALLOW_THREADS
    if (bad_key) {
        PyErr_SetString(PyExc_ValueError, "accumulate: a group key is outside [0, k)");
        goto done;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    for (Py_ssize_t i = 0; i < ncols; i++) {
        PyMem_Free(cols[i].lanes);
        PyMem_Free(cols[i].wide);
        PyBuffer_Release(&cols[i].values);
        PyBuffer_Release(&cols[i].acc);
    }
    for (Py_ssize_t i = 0; i < nparts; i++) {
        PyBuffer_Release(&parts[i].codes);
        if (parts[i].has_nil) PyBuffer_Release(&parts[i].nil);
    }
    if (has_mask) PyBuffer_Release(&mask);
    if (has_prog) program_release(&prog);
    Py_XDECREF(accs_seq);
    Py_XDECREF(cols_seq);
    Py_DECREF(parts_seq);
    if (op_of) PyBuffer_Release(&ops);
    return result;
}

/* lookup(lut, codes, out): out[i] = lut[codes[i]] (0 for a code outside the table), the
 * look-up table of a filter over dictionary codes. numpy's lut[codes] first widens the codes
 * to intp (a copy of 8 bytes per row); this reads them as they are. */
#define LOOKUP_LOOP(CTYPE, WIDE, UTYPE)                                                    \
    do {                                                                                   \
        const CTYPE *restrict c = (const CTYPE *)codes.buf;                                \
        for (Py_ssize_t i = 0; i < n; i++) {                                               \
            const uint64_t v = (uint64_t)c[i];                                             \
            o[i] = v < (uint64_t)nlut ? t[v] : 0;                                          \
        }                                                                                  \
    } while (0)

static PyObject *lookup(PyObject *self, PyObject *args) {
    PyObject *lut_obj, *codes_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OOO:lookup", &lut_obj, &codes_obj, &out_obj)) return NULL;
    Py_buffer lut, codes, out;
    if (get_buffer(lut_obj, &lut, 0, "lut") < 0) return NULL;
    if (get_buffer(codes_obj, &codes, 0, "codes") < 0) {
        PyBuffer_Release(&lut);
        return NULL;
    }
    if (get_buffer(out_obj, &out, 1, "out") < 0) {
        PyBuffer_Release(&lut);
        PyBuffer_Release(&codes);
        return NULL;
    }
    const int type = type_of(&codes);
    const Py_ssize_t n = codes.itemsize ? codes.len / codes.itemsize : 0, nlut = lut.len;
    PyObject *result = NULL;
    if (lut.itemsize != 1 || out.itemsize != 1 || out.len != n || !is_int_type(type)) {
        PyErr_SetString(PyExc_ValueError,
                        "lookup: lut and out must be bool arrays, codes integers, len(out) == n");
    } else {
        const uint8_t *restrict t = lut.buf;
        uint8_t *restrict o = out.buf;
        Py_BEGIN_ALLOW_THREADS
        switch (type) { INT_TYPE_CASES(LOOKUP_LOOP) }
        Py_END_ALLOW_THREADS
        result = Py_None;
        Py_INCREF(result);
    }
    PyBuffer_Release(&lut);
    PyBuffer_Release(&codes);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"lookup", lookup, METH_VARARGS,
     "lookup(lut, codes, out): out[i] = lut[codes[i]], 0 outside the table."},
    {"accumulate", accumulate, METH_VARARGS,
     "accumulate(base, k, parts, mask, columns, accs[, ops]): fused filter + group key + "
     "sums (ops: a byte per column, 0 sum, 1 min, 2 max)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels",
                                    "Fused scan kernel of gumshoe's query engine.", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
