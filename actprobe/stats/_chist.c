/* Fixed-bin histograms of CPU tensors: the C half of stats/histogram.py.
 *
 * Bin i holds the values x with edges[i] <= x < edges[i+1] (the last bin closed), as numpy.histogram
 * counts with the same edges; NaN is in no bin. A value's bin is the number of inner edges <= x. It
 * is found from a table indexed by the sign and the binary exponent of x (the count of inner edges
 * below the smallest value with that sign and exponent), then at most a few comparisons upwards, in
 * float64: a float32 value lands exactly where NumPy puts its float64 conversion.
 *
 * Compiled WITHOUT -ffast-math (setup.py): NaN and Inf are data here.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { KEYS = 4096 };  /* sign bit and 11 exponent bits of a float64 */

/* table[key]: how many inner edges are <= the smallest value with that sign and exponent (a lower
 * bound of the count for every value with that key). */
static int build_table(const double *inner, int64_t m, int32_t *table) {
    for (int key = 0; key < KEYS; key++) {
        int negative = key >> 11, exponent = key & 0x7ff;
        double low;
        if (!negative) {
            uint64_t bits = (uint64_t)exponent << 52;  /* the smallest positive value with this exponent */
            memcpy(&low, &bits, 8);
        } else {  /* the most negative value with this exponent: all mantissa bits set */
            uint64_t bits = (1ull << 63) | ((uint64_t)exponent << 52) | ((1ull << 52) - 1);
            memcpy(&low, &bits, 8);
            if (exponent == 0x7ff) low = -INFINITY;
        }
        int64_t count = 0;
        while (count < m && inner[count] <= low) count++;
        table[key] = (int32_t)count;
    }
    /* the most edges within one key: between the lower bound of a key and that of the next larger one */
    int steps = 1;
    for (int key = 0; key < KEYS; key++) {
        int next = key < 2048 ? (key + 1 < 2048 ? key + 1 : -1) : (key == 2048 ? 0 : key - 1);
        int64_t high = next < 0 ? m : table[next];
        if (high - table[key] + 1 > steps) steps = (int)(high - table[key] + 1);
    }
    return steps;
}

/* The bin of x: from the table's lower bound, ``steps`` branch-free steps up the padded edges (which
 * end in NaN, which no value is >=, so that no step runs past them); ``steps`` is the most edges one
 * key's values span. */
static inline int64_t bin_of(double x, const double *padded, int steps, const int32_t *table) {
    uint64_t bits;
    memcpy(&bits, &x, 8);
    int64_t bin = table[bits >> 52];
    for (int s = 0; s < steps; s++) bin += padded[bin] <= x;
    return bin;
}

/* Four interleaved sets of counters: consecutive values that fall in one bin do not wait on each
 * other's increment. NaN goes to an extra bin (m + 1) that is never added to the output. */
#define COUNT_ALL(T)                                                                               \
    for (long long i = 0; i < n; i++) {                                                            \
        double x = (double)((const T *)(uintptr_t)data)[i];                                        \
        counters[(i & 3) * (m + 2) + (isnan(x) ? m + 1 : bin_of(x, padded, steps, table))]++;     \
    }

/* hist(data, n, is_double, inner, m, out): counts of n float32 (or float64) values added into out[m + 1]. */
static PyObject *py_hist(PyObject *self, PyObject *args) {
    unsigned long long data, inner_ptr, out_ptr;
    long long n, m;
    int is_double;
    if (!PyArg_ParseTuple(args, "KLpKLK", &data, &n, &is_double, &inner_ptr, &m, &out_ptr)) return NULL;
    const double *inner = (const double *)(uintptr_t)inner_ptr;
    double *out = (double *)(uintptr_t)out_ptr;
    int32_t *table = malloc(sizeof(int32_t) * KEYS);
    uint64_t *counters = calloc(4 * (size_t)(m + 2), sizeof(uint64_t));
    double *padded = malloc(sizeof(double) * (size_t)(m + 64));
    if (!table || !counters || !padded) {
        free(table);
        free(counters);
        free(padded);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    int steps = build_table(inner, m, table);
    if (steps > 63) steps = 63;
    memcpy(padded, inner, sizeof(double) * (size_t)m);
    for (int k = 0; k < 64; k++) padded[m + k] = NAN;  /* never <= x, not even x = +inf */
    if (is_double) {
        COUNT_ALL(double)
    } else {
        COUNT_ALL(float)
    }
    for (long long b = 0; b <= m; b++)
        out[b] += (double)(counters[b] + counters[(m + 2) + b] + counters[2 * (m + 2) + b] + counters[3 * (m + 2) + b]);
    Py_END_ALLOW_THREADS
    free(table);
    free(counters);
    free(padded);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"hist", py_hist, METH_VARARGS, "Add the fixed-bin histogram of float32/float64 values into counts."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_chist", "Fixed-bin histograms on the CPU.", -1, methods};

PyMODINIT_FUNC PyInit__chist(void) { return PyModule_Create(&module); }
