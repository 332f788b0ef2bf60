/* Merging packed partials into rows of statistics on the CPU: the C half of stats/merge.py.
 *
 * The same computation as merge.merge_rows (torch operations, used on other devices and when this
 * extension is missing), in the same order of operations, but in one pass per row and without
 * allocating: entries -> groups (units, merged over a site's calls) -> sites, with the parallel
 * variance formula in float64; min/max/far/nonfinite from the rows of scalars.
 *
 * Compiled WITHOUT -ffast-math (setup.py): partials carry +-Inf and NaN (an all-NaN tensor's min
 * and max, a NaN shift), and the statistics must come out as IEEE arithmetic makes them.
 *
 * Each row of packed partials is laid out as merge.Layout describes: for each partial, at its
 * offset, count[E] shift[E] sum[E] sumsq[E] and then R rows of (min max far nonfinite).
 * Output per row: S sites x 8 statistics (count mean std min max near_zero dead nonfinite).
 *
 * Optionally (the rank files of a distributed run), each row's mergeable partials too: per site, 8
 * values (count mean m2 min max numel far nonfinite: count 0, mean 0 and m2 0 when the site saw no
 * finite value, min/max NaN then); per unit of the sites that have units, 3 (count mean m2), at the
 * unit columns `units` gives: (first unit column or -1, units) per site. A site absent from the row
 * leaves its units at 0; a site whose row has another number of groups than its units, at NaN.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { STATS = 8 };

/* parts: P x 4 int64 (site, offset, entries, scalar rows); sites: S x 3 int64 (first group, groups,
 * has units); numel: S float64; acc: 5 * G + 6 * S float64 of scratch. */
typedef struct {
    const int64_t *parts, *sites, *units;  /* units: S x 2 (first unit column or -1, units), or NULL */
    const double *numel;
    int64_t P, S, G, U;
    double dead_eps;
} layout_t;

enum { PARTIALS = 8, UNIT_PARTIALS = 3 };

/* The units of site s (groups g0 ... g0 + groups - 1 of the row) into their unit columns of `unit_out`. */
static void unit_partials(const layout_t *L, int64_t s, const int64_t *site, const double *g_n,
                          const double *g_mean, const double *g_m2a, const double *g_m2b, double *unit_out) {
    int64_t first = L->units[2 * s], count = L->units[2 * s + 1], g0 = site[0], groups = site[1];
    if (first < 0) return;
    double *u = unit_out + UNIT_PARTIALS * first;
    for (int64_t k = 0; k < count; k++) {
        if (groups == count && site[2]) {
            u[3 * k] = g_n[g0 + k];
            u[3 * k + 1] = g_mean[g0 + k];
            u[3 * k + 2] = g_m2a[g0 + k] + g_m2b[g0 + k];
        } else {  /* absent from this row: nothing seen; another number of groups: unknown */
            double fill = groups == 0 ? 0.0 : NAN;
            u[3 * k] = u[3 * k + 1] = u[3 * k + 2] = fill;
        }
    }
}

static void merge_row(const layout_t *L, const double *row, double *out, double *acc, double *partial_out,
                      double *unit_out) {
    int64_t G = L->G, S = L->S;
    double *g_n = acc, *g_mean = acc + G, *g_m2a = acc + 2 * G, *g_m2b = acc + 3 * G, *g_sum = acc + 4 * G;
    double *s_n = acc + 5 * G, *s_mean = s_n + S, *s_min = s_n + 2 * S, *s_max = s_n + 3 * S;
    double *s_far = s_n + 4 * S, *s_nonfinite = s_n + 5 * S;
    for (int64_t g = 0; g < 5 * G; g++) acc[g] = 0.0;
    for (int64_t s = 0; s < S; s++) {
        s_n[s] = s_mean[s] = s_far[s] = s_nonfinite[s] = 0.0;
        s_min[s] = INFINITY;
        s_max[s] = -INFINITY;
    }
    /* entries -> groups: count and sum of count * mean; the scalars straight to their sites */
    for (int64_t p = 0; p < L->P; p++) {
        const int64_t *part = L->parts + 4 * p;
        int64_t site = part[0], E = part[2], R = part[3], g0 = L->sites[3 * site];
        const double *count = row + part[1], *shift = count + E, *first = shift + E, *scalars = first + 2 * E;
        for (int64_t j = 0; j < E; j++) {
            double c = count[j];
            if (c > 0.0) {
                g_n[g0 + j] += c;
                g_sum[g0 + j] += c * (shift[j] + first[j] / c);
            }
        }
        for (int64_t r = 0; r < R; r++) {
            const double *q = scalars + 4 * r;
            if (!isnan(s_min[site]) && (isnan(q[0]) || q[0] < s_min[site])) s_min[site] = q[0];
            if (!isnan(s_max[site]) && (isnan(q[1]) || q[1] > s_max[site])) s_max[site] = q[1];
            s_far[site] += q[2];
            s_nonfinite[site] += q[3];
        }
    }
    for (int64_t g = 0; g < G; g++) g_mean[g] = g_n[g] > 0.0 ? g_sum[g] / g_n[g] : 0.0;
    /* entries -> groups: the sum of M2 and of count * (mean - group mean)^2 */
    for (int64_t p = 0; p < L->P; p++) {
        const int64_t *part = L->parts + 4 * p;
        int64_t E = part[2], g0 = L->sites[3 * part[0]];
        const double *count = row + part[1], *shift = count + E, *first = shift + E, *second = first + E;
        for (int64_t j = 0; j < E; j++) {
            double c = count[j];
            if (c > 0.0) {
                double m2 = second[j] - first[j] * first[j] / c;
                double spread = (shift[j] + first[j] / c) - g_mean[g0 + j];
                g_m2a[g0 + j] += m2 < 0.0 ? 0.0 : m2;  /* clamp_min(0): NaN stays NaN */
                g_m2b[g0 + j] += c * spread * spread;
            }
        }
    }
    /* groups -> sites, the same way; dead units from the groups' std */
    for (int64_t s = 0; s < S; s++) {
        const int64_t *site = L->sites + 3 * s;
        int64_t g0 = site[0], groups = site[1];
        double n = 0.0, sum = 0.0, m2a = 0.0, m2b = 0.0, dead = 0.0;
        for (int64_t g = g0; g < g0 + groups; g++) {
            n += g_n[g];
            sum += g_n[g] * g_mean[g];
        }
        double mean = n > 0.0 ? sum / n : 0.0;
        for (int64_t g = g0; g < g0 + groups; g++) {
            double m2 = g_m2a[g] + g_m2b[g], spread = g_mean[g] - mean;
            m2a += m2;
            m2b += g_n[g] * spread * spread;
            if (site[2] && sqrt(m2 / g_n[g]) <= L->dead_eps) dead += 1.0;  /* 0/0 is NaN: not dead */
        }
        double units = site[2] ? (double)groups : 0.0, numel = L->numel[s], *o = out + STATS * s;
        int some = n > 0.0;
        o[0] = numel > 0.0 ? n : NAN;
        o[1] = some ? mean : NAN;
        o[2] = some ? sqrt((m2a + m2b) / n) : NAN;
        o[3] = some ? s_min[s] : NAN;
        o[4] = some ? s_max[s] : NAN;
        o[5] = (numel - s_far[s]) / numel;
        o[6] = dead / units;
        o[7] = s_nonfinite[s] / numel;
        if (partial_out) {
            double *q = partial_out + PARTIALS * s;
            q[0] = n;
            q[1] = mean;
            q[2] = m2a + m2b;
            q[3] = some ? s_min[s] : NAN;
            q[4] = some ? s_max[s] : NAN;
            q[5] = numel;
            q[6] = s_far[s];
            q[7] = s_nonfinite[s];
        }
        if (unit_out) unit_partials(L, s, site, g_n, g_mean, g_m2a, g_m2b, unit_out);
    }
}

/* merge(rows, n, width, parts, P, sites, numel, S, G, dead_eps, out[, partials, units, unit_columns, U]):
 * pointers as integers; rows hold n x width float64, out n x S x 8 float64; partials (0: none) n x S x 8,
 * units (0: none) n x U x 3 float64, unit_columns S x 2 int64. */
static PyObject *py_merge(PyObject *self, PyObject *args) {
    unsigned long long rows, parts, sites, numel, out, partials = 0, unit_out = 0, unit_columns = 0;
    long long n, width;
    layout_t L;
    L.U = 0;
    if (!PyArg_ParseTuple(args, "KLLKLKKLLdK|KKKL", &rows, &n, &width, &parts, &L.P, &sites, &numel, &L.S, &L.G,
                          &L.dead_eps, &out, &partials, &unit_out, &unit_columns, &L.U))
        return NULL;
    L.parts = (const int64_t *)(uintptr_t)parts;
    L.sites = (const int64_t *)(uintptr_t)sites;
    L.units = unit_out ? (const int64_t *)(uintptr_t)unit_columns : NULL;
    L.numel = (const double *)(uintptr_t)numel;
    double *acc = malloc(sizeof(double) * (size_t)(5 * L.G + 6 * L.S + 1));
    if (!acc) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    for (long long r = 0; r < n; r++)
        merge_row(&L, (const double *)(uintptr_t)rows + r * width, (double *)(uintptr_t)out + r * L.S * STATS, acc,
                  partials ? (double *)(uintptr_t)partials + r * L.S * PARTIALS : NULL,
                  unit_out ? (double *)(uintptr_t)unit_out + r * L.U * UNIT_PARTIALS : NULL);
    Py_END_ALLOW_THREADS
    free(acc);
    Py_RETURN_NONE;
}

/* copy(destination, source, bytes): memmove between two addresses (a step's packed partials into the ring):
 * one call of this module, lighter than ctypes.memmove in a step that left the caches cold. */
static PyObject *py_copy(PyObject *self, PyObject *args) {
    unsigned long long destination, source;
    long long bytes;
    if (!PyArg_ParseTuple(args, "KKL", &destination, &source, &bytes)) return NULL;
    if (bytes < 0) { PyErr_SetString(PyExc_ValueError, "a negative length"); return NULL; }
    memmove((void *)(uintptr_t)destination, (const void *)(uintptr_t)source, (size_t)bytes);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"merge", py_merge, METH_VARARGS, "Rows of packed partials -> rows of per-site statistics."},
    {"copy", py_copy, METH_VARARGS, "memmove(destination, source, bytes) between two addresses."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cmerge", "Merging packed partials on the CPU.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__cmerge(void) { return PyModule_Create(&module); }
