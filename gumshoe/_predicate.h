/* The filter evaluator of the scan kernel (_kernels.c): a predicate program (gumshoe/filters.py
 * builds it, one per block) evaluated over one chunk of rows at a time into a byte mask that
 * stays in the L1 cache. It replaces numpy's one full-length temporary array per leaf and per
 * combinator, each made under the GIL, with one pass per leaf over a chunk, GIL released.
 *
 * A program is a list of tuples in postfix order (filters.py has the reference evaluator):
 *   (RANGE, values, lo, hi, negate, nil, nil_result)  integers: (lo <= v <= hi) != negate
 *   (LUT, codes, table, 0, 0, nil, nil_result)        table[code], 0 outside the table
 *   (FCMP, values, op, x, 0, nil, nil_result)         floats: v op x, op 0..5 = != > >= < <=
 *   (MASK, mask, 0, 0, 0, None, 0)                    a precomputed mask
 *   (AND, n) (OR, n) (NOT, 0)                         combine the top n results / negate
 * A leaf's nil array (or None) gives nil_result on nil rows.
 */
#ifndef GUMSHOE_PREDICATE_H
#define GUMSHOE_PREDICATE_H

#include <Python.h>
#include <stdint.h>
#include <string.h>
#include "_buffer.h"

enum { P_RANGE, P_LUT, P_FCMP, P_MASK, P_AND, P_OR, P_NOT };

typedef struct {
    int kind, type, has_values, has_nil, has_table, negate, fop;
    uint8_t nil_result;
    Py_buffer values, nil, table;
    uint64_t lo, span; /* RANGE: v in [lo, lo + span], both as 64-bit two's complement */
    double x;
    Py_ssize_t n; /* AND/OR: operands */
} POp;

typedef struct {
    POp *ops;
    Py_ssize_t nops, depth;
    uint8_t *stack; /* depth chunk-sized masks */
    Py_ssize_t chunk;
} Program;

static void program_release(Program *pg) {
    for (Py_ssize_t i = 0; i < pg->nops; i++) {
        POp *op = &pg->ops[i];
        if (op->has_values) PyBuffer_Release(&op->values);
        if (op->has_nil) PyBuffer_Release(&op->nil);
        if (op->has_table) PyBuffer_Release(&op->table);
    }
    PyMem_Free(pg->ops);
    PyMem_Free(pg->stack);
    pg->ops = NULL;
    pg->stack = NULL;
    pg->nops = 0;
}


/* A 64-bit bound of a RANGE leaf, as the column's type reads it. */
static int range_bound(PyObject *o, int type, uint64_t *out) {
    if (is_signed_type(type)) {
        long long v = PyLong_AsLongLong(o);
        if (v == -1 && PyErr_Occurred()) return -1;
        *out = (uint64_t)v;
    } else {
        unsigned long long v = PyLong_AsUnsignedLongLong(o);
        if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
        *out = (uint64_t)v;
    }
    return 0;
}

static int get_view(PyObject *obj, Py_buffer *view, Py_ssize_t n, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    if (view->ndim > 1 || (n >= 0 && (view->itemsize == 0 || view->len / view->itemsize != n))) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "filter program: %s must be a 1-d array of n rows", what);
        return -1;
    }
    return 0;
}

/* Parse and check a program over n rows (GIL held). Returns 0, or -1 with an exception set
 * (the program is then released). */
static int program_parse(PyObject *list, Py_ssize_t n, Py_ssize_t chunk, Program *pg) {
    memset(pg, 0, sizeof *pg);
    pg->chunk = chunk;
    PyObject *seq = PySequence_Fast(list, "filter program must be a sequence");
    if (!seq) return -1;
    Py_ssize_t nops = PySequence_Fast_GET_SIZE(seq), sp = 0;
    pg->ops = PyMem_Calloc(nops ? (size_t)nops : 1, sizeof(POp));
    if (!pg->ops) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < nops; i++) {
        PyObject *t = PySequence_Fast_GET_ITEM(seq, i);
        POp *op = &pg->ops[i];
        pg->nops = i + 1;
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) < 2) goto bad_op;
        long kind = PyLong_AsLong(PyTuple_GET_ITEM(t, 0));
        if (kind == -1 && PyErr_Occurred()) goto fail;
        op->kind = (int)kind;
        if (kind == P_AND || kind == P_OR || kind == P_NOT) {
            Py_ssize_t k = kind == P_NOT ? 1 : PyLong_AsSsize_t(PyTuple_GET_ITEM(t, 1));
            if (k == -1 && PyErr_Occurred()) goto fail;
            if (k < 1 || k > sp) goto bad_stack;
            op->n = k;
            sp -= k - 1;
            continue;
        }
        if (kind < P_RANGE || kind > P_MASK || PyTuple_GET_SIZE(t) != 7) goto bad_op;
        if (get_view(PyTuple_GET_ITEM(t, 1), &op->values, n, "values") < 0) goto fail;
        op->has_values = 1;
        op->type = type_of(&op->values);
        PyObject *nil = PyTuple_GET_ITEM(t, 5);
        if (nil != Py_None) {
            if (get_view(nil, &op->nil, n, "nil") < 0) goto fail;
            op->has_nil = 1;
            if (op->nil.itemsize != 1) goto bad_op;
        }
        int nr = PyObject_IsTrue(PyTuple_GET_ITEM(t, 6));
        if (nr < 0) goto fail;
        op->nil_result = (uint8_t)nr;
        switch (kind) {
        case P_RANGE: {
            uint64_t lo, hi;
            if (!is_int_type(op->type)) goto bad_op;
            if (range_bound(PyTuple_GET_ITEM(t, 2), op->type, &lo) < 0 ||
                range_bound(PyTuple_GET_ITEM(t, 3), op->type, &hi) < 0)
                goto fail;
            if (is_signed_type(op->type) ? (int64_t)hi < (int64_t)lo : hi < lo) goto bad_op;
            int neg = PyObject_IsTrue(PyTuple_GET_ITEM(t, 4));
            if (neg < 0) goto fail;
            op->lo = lo;
            op->span = hi - lo;
            op->negate = neg;
            break;
        }
        case P_LUT:
            if (!is_int_type(op->type)) goto bad_op;
            if (get_view(PyTuple_GET_ITEM(t, 2), &op->table, -1, "table") < 0) goto fail;
            op->has_table = 1;
            if (op->table.itemsize != 1) goto bad_op;
            break;
        case P_FCMP: {
            long fop = PyLong_AsLong(PyTuple_GET_ITEM(t, 2));
            if (fop == -1 && PyErr_Occurred()) goto fail;
            double x = PyFloat_AsDouble(PyTuple_GET_ITEM(t, 3));
            if (x == -1.0 && PyErr_Occurred()) goto fail;
            if ((op->type != T_F32 && op->type != T_F64) || fop < 0 || fop > 5) goto bad_op;
            op->fop = (int)fop;
            op->x = x;
            break;
        }
        case P_MASK:
            if (op->values.itemsize != 1 || op->has_nil) goto bad_op;
            break;
        }
        if (++sp > pg->depth) pg->depth = sp;
    }
    Py_DECREF(seq);
    seq = NULL;
    if (sp != 1) goto bad_stack;
    pg->stack = PyMem_Malloc((size_t)(pg->depth * chunk));
    if (!pg->stack) {
        PyErr_NoMemory();
        goto fail;
    }
    return 0;
bad_stack:
    PyErr_SetString(PyExc_ValueError, "filter program: operands and combinators do not match");
    goto fail;
bad_op:
    PyErr_SetString(PyExc_ValueError, "filter program: malformed operation or wrong types");
fail:
    Py_XDECREF(seq);
    program_release(pg);
    return -1;
}

/* In the column's own width (lo and hi lie in its range, so the span fits its unsigned
 * type and the wrap-around subtraction is exact): 32 one-byte codes per AVX2 compare, where
 * 64-bit arithmetic took 4. */
#define P_RANGE_LOOP(CTYPE, WIDE, UTYPE)                                                   \
    do {                                                                                   \
        const CTYPE *restrict c = (const CTYPE *)op->values.buf + start;                   \
        const UTYPE l = (UTYPE)lo, sp = (UTYPE)span;                                       \
        for (Py_ssize_t i = 0; i < len; i++)                                               \
            d[i] = (uint8_t)(((UTYPE)((UTYPE)c[i] - l) <= sp) ^ neg);                      \
    } while (0)

#define P_LUT_LOOP(CTYPE, WIDE, UTYPE)                                                     \
    do {                                                                                   \
        const CTYPE *restrict c = (const CTYPE *)op->values.buf + start;                   \
        for (Py_ssize_t i = 0; i < len; i++) {                                             \
            const uint64_t v = (uint64_t)(WIDE)c[i];                                       \
            d[i] = v < nt ? (tb[v] != 0) : 0;                                              \
        }                                                                                  \
    } while (0)

#define P_INT_SWITCH(LOOP) switch (op->type) { INT_TYPE_CASES(LOOP) }

#define P_FCMP_LOOP(CTYPE, OP)                                                             \
    do {                                                                                   \
        const CTYPE *restrict c = (const CTYPE *)op->values.buf + start;                   \
        for (Py_ssize_t i = 0; i < len; i++) d[i] = (double)c[i] OP x;                     \
    } while (0)

#define P_FCMP_OPS(CTYPE)                                                                  \
    switch (op->fop) {                                                                     \
    case 0: P_FCMP_LOOP(CTYPE, ==); break;                                                 \
    case 1: P_FCMP_LOOP(CTYPE, !=); break;                                                 \
    case 2: P_FCMP_LOOP(CTYPE, >); break;                                                  \
    case 3: P_FCMP_LOOP(CTYPE, >=); break;                                                 \
    case 4: P_FCMP_LOOP(CTYPE, <); break;                                                  \
    case 5: P_FCMP_LOOP(CTYPE, <=); break;                                                 \
    }

/* The program's mask of rows [start, start + len), len <= chunk (GIL not needed): 0/1 bytes
 * in the first stack slot. */
HOT_INLINE const uint8_t *program_eval(const Program *pg, Py_ssize_t start, Py_ssize_t len) {
    Py_ssize_t sp = 0;
    const Py_ssize_t chunk = pg->chunk;
    for (Py_ssize_t q = 0; q < pg->nops; q++) {
        const POp *op = &pg->ops[q];
        if (op->kind == P_AND || op->kind == P_OR) {
            sp -= op->n;
            uint8_t *restrict d = pg->stack + sp * chunk;
            for (Py_ssize_t o = 1; o < op->n; o++) {
                const uint8_t *restrict s = pg->stack + (sp + o) * chunk;
                if (op->kind == P_AND)
                    for (Py_ssize_t i = 0; i < len; i++) d[i] &= s[i];
                else
                    for (Py_ssize_t i = 0; i < len; i++) d[i] |= s[i];
            }
            sp++;
            continue;
        }
        if (op->kind == P_NOT) {
            uint8_t *restrict d = pg->stack + (sp - 1) * chunk;
            for (Py_ssize_t i = 0; i < len; i++) d[i] ^= 1;
            continue;
        }
        uint8_t *restrict d = pg->stack + sp * chunk;
        sp++;
        switch (op->kind) {
        case P_RANGE: {
            const uint64_t lo = op->lo, span = op->span;
            const uint8_t neg = (uint8_t)op->negate;
            P_INT_SWITCH(P_RANGE_LOOP)
            break;
        }
        case P_LUT: {
            const uint8_t *restrict tb = op->table.buf;
            const uint64_t nt = (uint64_t)op->table.len;
            P_INT_SWITCH(P_LUT_LOOP)
            break;
        }
        case P_FCMP: {
            const double x = op->x;
            if (op->type == T_F32) {
                P_FCMP_OPS(float)
            } else {
                P_FCMP_OPS(double)
            }
            break;
        }
        case P_MASK: {
            const uint8_t *restrict s = (const uint8_t *)op->values.buf + start;
            for (Py_ssize_t i = 0; i < len; i++) d[i] = s[i] != 0;
            break;
        }
        }
        if (op->has_nil) { /* nil rows get nil_result, branch-free */
            const uint8_t *restrict nl = (const uint8_t *)op->nil.buf + start;
            const uint8_t nr = op->nil_result;
            for (Py_ssize_t i = 0; i < len; i++) {
                const uint8_t is_nil = nl[i] != 0;
                d[i] = (uint8_t)((d[i] & (uint8_t)(is_nil - 1)) | (nr & is_nil));
            }
        }
    }
    return pg->stack;
}

#endif
