/* The recording state as C fields, and the end of a recorded step in C (part of the _cstats extension).
 *
 * ArenaCore, RingCore, StageCore and RecorderCore are the bases of stats.arena.Arena, stats.merge.PartialRing,
 * engine.staging.RowStage and engine.recorder.Recorder. They hold the attributes that the hooks (Hook in
 * _cstats.c) and RecorderCore.seal read and write on every recorded step, as fields of a Core: Python reads and
 * sets them as ordinary attributes (member descriptors), C without a dictionary lookup. A step that ends after
 * the caches went cold (a training step reads megabytes) pays a cache miss for each object and dictionary it
 * touches; here the state of a step's end is four objects.
 *
 * RecorderCore.seal(step, elapsed, scalars) ends a recorded step in the common case, as
 * engine.recorder.Recorder documents it; it declines (0, having changed nothing) in any other.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#include "_cstate.h"

#define INT(c, k) (((Core *)(c))->i[k])
#define OBJ(c, k) (((Core *)(c))->o[k])

static int core_traverse(Core *c, visitproc visit, void *arg) {
    for (int k = 0; k < CORE_OBJECTS; k++) Py_VISIT(c->o[k]);
    return 0;
}

static int core_clear(Core *c) {
    for (int k = 0; k < CORE_OBJECTS; k++) Py_CLEAR(c->o[k]);
    return 0;
}

static void core_dealloc(Core *c) {
    PyObject_GC_UnTrack(c);
    core_clear(c);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

/* copy.copy, copy.deepcopy and pickle: (the instance's dictionary or None, the ints, the doubles, {index: object}
 * of the object fields that are set). */
static PyObject *core_getstate(PyObject *self, PyObject *unused) {
    Core *c = (Core *)self;
    PyObject *dict = PyObject_GenericGetDict(self, NULL);
    if (dict == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return NULL;
        PyErr_Clear();
        dict = Py_NewRef(Py_None);
    }
    PyObject *ints = PyTuple_New(CORE_INTS), *doubles = PyTuple_New(CORE_DOUBLES), *objects = PyDict_New();
    int ok = ints != NULL && doubles != NULL && objects != NULL;
    for (int k = 0; ok && k < CORE_INTS; k++) {
        PyObject *v = PyLong_FromLongLong(c->i[k]);
        if (v == NULL) ok = 0;
        else PyTuple_SET_ITEM(ints, k, v);
    }
    for (int k = 0; ok && k < CORE_DOUBLES; k++) {
        PyObject *v = PyFloat_FromDouble(c->d[k]);
        if (v == NULL) ok = 0;
        else PyTuple_SET_ITEM(doubles, k, v);
    }
    for (int k = 0; ok && k < CORE_OBJECTS; k++) {
        if (c->o[k] == NULL) continue;
        PyObject *key = PyLong_FromLong(k);
        ok = key != NULL && PyDict_SetItem(objects, key, c->o[k]) == 0;
        Py_XDECREF(key);
    }
    if (!ok) {
        Py_DECREF(dict);
        Py_XDECREF(ints);
        Py_XDECREF(doubles);
        Py_XDECREF(objects);
        return NULL;
    }
    return Py_BuildValue("(NNNN)", dict, ints, doubles, objects);
}

static PyObject *core_setstate(PyObject *self, PyObject *state) {
    Core *c = (Core *)self;
    PyObject *dict, *ints, *doubles, *objects;
    if (!PyArg_ParseTuple(state, "OO!O!O!:__setstate__", &dict, &PyTuple_Type, &ints, &PyTuple_Type, &doubles,
                          &PyDict_Type, &objects))
        return NULL;
    if (PyTuple_GET_SIZE(ints) != CORE_INTS || PyTuple_GET_SIZE(doubles) != CORE_DOUBLES) {
        PyErr_SetString(PyExc_ValueError, "__setstate__: a state of another layout");
        return NULL;
    }
    long long i[CORE_INTS];
    double d[CORE_DOUBLES];
    for (int k = 0; k < CORE_INTS; k++)
        if ((i[k] = PyLong_AsLongLong(PyTuple_GET_ITEM(ints, k))) == -1 && PyErr_Occurred()) return NULL;
    for (int k = 0; k < CORE_DOUBLES; k++)
        if ((d[k] = PyFloat_AsDouble(PyTuple_GET_ITEM(doubles, k))) == -1.0 && PyErr_Occurred()) return NULL;
    PyObject *key, *value;
    Py_ssize_t position = 0;
    while (PyDict_Next(objects, &position, &key, &value)) {
        long k = PyLong_AsLong(key);
        if (k < 0 || k >= CORE_OBJECTS) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "__setstate__: a field out of range");
            return NULL;
        }
    }
    if (dict != Py_None) {
        PyObject *own = PyObject_GenericGetDict(self, NULL);
        int r = own == NULL ? -1 : PyDict_Update(own, dict);
        Py_XDECREF(own);
        if (r < 0) return NULL;
    }
    memcpy(c->i, i, sizeof i);
    memcpy(c->d, d, sizeof d);
    position = 0;
    while (PyDict_Next(objects, &position, &key, &value)) Py_XSETREF(c->o[PyLong_AsLong(key)], Py_NewRef(value));
    Py_RETURN_NONE;
}

#define CORE_COPY_METHODS \
    {"__getstate__", core_getstate, METH_NOARGS, "The fields and the dictionary, for copy and pickle."}, \
    {"__setstate__", core_setstate, METH_O, "The fields and the dictionary from __getstate__'s state."}

static PyMethodDef core_methods[] = {CORE_COPY_METHODS, {NULL, NULL, 0, NULL}};

#define INT_MEMBER(name, k) {name, T_LONGLONG, offsetof(Core, i) + (k) * sizeof(long long), 0, NULL}
#define OBJ_MEMBER(name, k) {name, T_OBJECT_EX, offsetof(Core, o) + (k) * sizeof(PyObject *), 0, NULL}

static PyMemberDef arena_members[] = {
    INT_MEMBER("used", ARENA_USED), INT_MEMBER("size", ARENA_SIZE), INT_MEMBER("pointer", ARENA_POINTER),
    OBJ_MEMBER("aimed", ARENA_AIMED), OBJ_MEMBER("zero_on_clear", ARENA_ZERO_ON_CLEAR),
    OBJ_MEMBER("on_cpu", ARENA_ON_CPU), OBJ_MEMBER("_base", ARENA_BASE), OBJ_MEMBER("_buffer", ARENA_BUFFER),
    OBJ_MEMBER("_retired", ARENA_RETIRED), {NULL, 0, 0, 0, NULL},
};

static PyMemberDef ring_members[] = {
    INT_MEMBER("filled", RING_FILLED), INT_MEMBER("capacity", RING_CAPACITY), INT_MEMBER("first_row", RING_FIRST_ROW),
    INT_MEMBER("_pointer", RING_POINTER), INT_MEMBER("width", RING_WIDTH), INT_MEMBER("_buffers", RING_BUFFERS),
    OBJ_MEMBER("key", RING_KEY), OBJ_MEMBER("rows", RING_ROWS), OBJ_MEMBER("_on_cpu", RING_ON_CPU),
    {NULL, 0, 0, 0, NULL},
};

static PyMemberDef stage_members[] = {
    INT_MEMBER("rows", STAGE_ROWS), INT_MEMBER("capacity", STAGE_CAPACITY),
    INT_MEMBER("deferred_bytes", STAGE_DEFERRED_BYTES), OBJ_MEMBER("scalar_index", STAGE_SCALAR_INDEX),
    OBJ_MEMBER("_steps", STAGE_STEPS), OBJ_MEMBER("_times", STAGE_TIMES), OBJ_MEMBER("_host_rows", STAGE_HOST_ROWS),
    {NULL, 0, 0, 0, NULL},
};

#define DOUBLE_MEMBER(name, k) {name, T_DOUBLE, offsetof(Core, d) + (k) * sizeof(double), 0, NULL}

static PyMemberDef probe_members[] = {
    INT_MEMBER("_step", PROBE_STEP), INT_MEMBER("_every", PROBE_EVERY), INT_MEMBER("_hist_every", PROBE_HIST_EVERY),
    DOUBLE_MEMBER("_started", PROBE_STARTED), DOUBLE_MEMBER("_last_flush", PROBE_LAST_FLUSH),
    DOUBLE_MEMBER("_flush_seconds", PROBE_FLUSH_SECONDS), OBJ_MEMBER("_recorder", PROBE_RECORDER),
    OBJ_MEMBER("error", PROBE_ERROR), OBJ_MEMBER("closed", PROBE_CLOSED), OBJ_MEMBER("_forked", PROBE_FORKED),
    OBJ_MEMBER("_calls", PROBE_CALLS), OBJ_MEMBER("_writer", PROBE_WRITER), {NULL, 0, 0, 0, NULL},
};

static PyMemberDef recorder_members[] = {
    INT_MEMBER("_generation", RECORDER_GENERATION), INT_MEMBER("_flush_bytes", RECORDER_FLUSH_BYTES),
    OBJ_MEMBER("_lanes_possible", RECORDER_LANES_POSSIBLE), OBJ_MEMBER("_hist_now", RECORDER_HIST_NOW),
    OBJ_MEMBER("news", RECORDER_NEWS), OBJ_MEMBER("_ring", RECORDER_RING), OBJ_MEMBER("stage", RECORDER_STAGE),
    OBJ_MEMBER("_arena", RECORDER_ARENA), OBJ_MEMBER("_partials", RECORDER_PARTIALS),
    OBJ_MEMBER("_param_partials", RECORDER_PARAM_PARTIALS), OBJ_MEMBER("_leaf_hooks", RECORDER_LEAF_HOOKS),
    OBJ_MEMBER("_lanes", RECORDER_LANES), {NULL, 0, 0, 0, NULL},
};

/* 1 when o is set and true, 0 otherwise (an error in its truth is cleared: not true). */
static int is_true(PyObject *o) {
    if (o == Py_True) return 1;
    if (o == NULL || o == Py_False || o == Py_None) return 0;
    int r = PyObject_IsTrue(o);
    if (r < 0) PyErr_Clear();
    return r == 1;
}

/* 1 when o is set and false, 0 otherwise. */
static int is_false(PyObject *o) {
    if (o == Py_False || o == Py_None) return 1;
    if (o == NULL || o == Py_True) return 0;
    int r = PyObject_IsTrue(o);
    if (r < 0) PyErr_Clear();
    return r == 0;
}

static int empty_list(PyObject *o) { return o != NULL && PyList_Check(o) && PyList_GET_SIZE(o) == 0; }

static PyObject *s_item, *s_unaim;

/* An error while reading a scalar: an Exception declines (0: the general path reads the value again, and reports
 * what it cannot record), any other (KeyboardInterrupt) goes on (-1). */
static int declined(void) {
    if (!PyErr_ExceptionMatches(PyExc_Exception)) return -1;
    PyErr_Clear();
    return 0;
}

/* The recorded value of one scalar into *out (a new reference), as the general path records it: 1; 0 for any value
 * the common case leaves to it; -1 an error that goes on (set). A float; an int as a float (not one beyond
 * float64); a one-value CPU torch.Tensor read with item() (not a complex one). */
static int scalar_number(PyObject *value, PyObject **out) {
    *out = NULL;
    if (PyFloat_CheckExact(value)) {
        *out = Py_NewRef(value);
        return 1;
    }
    if (PyLong_CheckExact(value)) {
        double d = PyLong_AsDouble(value);
        if (d == -1.0 && PyErr_Occurred()) return declined();
        return (*out = PyFloat_FromDouble(d)) == NULL ? -1 : 1;
    }
    if (lane_tensor_type == NULL || (PyObject *)Py_TYPE(value) != lane_tensor_type) return 0;
    PyObject *cpu = PyObject_GetAttr(value, s_is_cpu);
    if (cpu != Py_True) {
        Py_XDECREF(cpu);
        return cpu == NULL ? declined() : 0;
    }
    Py_DECREF(cpu);
    PyObject *number = PyObject_CallMethodNoArgs(value, s_item);  /* raises for more than one value */
    if (number == NULL) return declined();
    if (PyComplex_Check(number)) {
        Py_DECREF(number);
        return 0;
    }
    *out = number;
    return 1;
}

/* Whether a scalar is of a kind the common case takes (before any is read): a float, an int, a torch.Tensor. */
static int scalar_kind(PyObject *value) {
    return PyFloat_CheckExact(value) || PyLong_CheckExact(value)
           || (lane_tensor_type != NULL && (PyObject *)Py_TYPE(value) == lane_tensor_type);
}

/* The (column, value) pairs of a step's n scalars (names[k] = values[k]) into *row: 1; 0 when one is not the common
 * case's; -1 an error that goes on (set). Every name and kind is checked before any tensor is read. */
static int scalar_row(PyObject *names, PyObject *const *values, Py_ssize_t n, PyObject *index, PyObject **row) {
    *row = NULL;
    for (Py_ssize_t k = 0; k < n; k++) {
        if (!scalar_kind(values[k])) return 0;
        PyObject *column = PyDict_GetItemWithError(index, PyTuple_GET_ITEM(names, k));  /* borrowed */
        if (column == NULL) return PyErr_Occurred() ? declined() : 0;
    }
    if ((*row = PyList_New(0)) == NULL) return -1;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *column = PyDict_GetItemWithError(index, PyTuple_GET_ITEM(names, k)), *number, *pair;  /* borrowed */
        int r = column == NULL ? (PyErr_Occurred() ? declined() : 0) : scalar_number(values[k], &number);
        if (r == 1) {
            pair = PyTuple_Pack(2, column, number);
            Py_DECREF(number);
            r = pair == NULL || PyList_Append(*row, pair) < 0 ? -1 : 1;
            Py_XDECREF(pair);
        }
        if (r < 1) {
            Py_CLEAR(*row);
            return r;
        }
    }
    return 1;
}

/* Whether this step's partials are arranged as the ring's rows, the same pairs in order: 1 the same objects (as
 * in a step of lanes once the key is theirs), 2 equal ones, 0 not. */
static int same_arrangement(PyObject *key, PyObject *partials) {
    if (key == NULL || !PyTuple_Check(key) || PyTuple_GET_SIZE(key) != PyList_GET_SIZE(partials)) return 0;
    int r = 1;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(key); k++) {
        PyObject *a = PyTuple_GET_ITEM(key, k), *b = PyList_GET_ITEM(partials, k);
        if (a == b) continue;
        Py_INCREF(a);
        Py_INCREF(b);
        int equal = PyObject_RichCompareBool(a, b, Py_EQ);
        Py_DECREF(a);
        Py_DECREF(b);
        if (equal != 1 || PyList_GET_SIZE(partials) != PyTuple_GET_SIZE(key)) {
            PyErr_Clear();
            return 0;
        }
        r = 2;
    }
    return r;
}

static void drop_last(PyObject *list) { PyList_SetSlice(list, PyList_GET_SIZE(list) - 1, PyList_GET_SIZE(list), NULL); }

/* Whether the recording state lets seal_row make the row (the checks of commit_row, which runs them again after
 * the scalars are read): 1 the step's pairs are the ring's key, 2 equal to it, 0 not. */
static int sealable(PyObject *self) {
    PyObject *ring = OBJ(self, RECORDER_RING), *stage = OBJ(self, RECORDER_STAGE), *arena = OBJ(self, RECORDER_ARENA),
             *partials = OBJ(self, RECORDER_PARTIALS);
    if (!is_true(OBJ(self, RECORDER_LANES_POSSIBLE)) || !is_false(OBJ(self, RECORDER_HIST_NOW))
            || !is_false(OBJ(self, RECORDER_NEWS)) || !empty_list(OBJ(self, RECORDER_PARAM_PARTIALS))
            || !empty_list(OBJ(self, RECORDER_LEAF_HOOKS)) || partials == NULL || !PyList_Check(partials)
            || ring == NULL || !PyObject_TypeCheck(ring, &RingCoreType)
            || stage == NULL || !PyObject_TypeCheck(stage, &StageCoreType)
            || arena == NULL || !PyObject_TypeCheck(arena, &ArenaCoreType))
        return 0;
    const long long filled = INT(ring, RING_FILLED), row = INT(stage, STAGE_ROWS);
    PyObject *steps = OBJ(stage, STAGE_STEPS), *times = OBJ(stage, STAGE_TIMES), *host = OBJ(stage, STAGE_HOST_ROWS);
    /* the ring has room for the row and it follows the ring's rows; the arena holds one row of the ring's width, in
     * host memory, and nothing to zero or release; the step's partials are arranged as the ring's rows */
    if (filled < 0 || filled >= INT(ring, RING_CAPACITY) || (filled && INT(ring, RING_FIRST_ROW) + filled != row)
            || INT(ring, RING_WIDTH) <= 0 || row < 0 || row >= INT(stage, STAGE_CAPACITY)
            || INT(arena, ARENA_USED) != INT(ring, RING_WIDTH) || INT(ring, RING_POINTER) == 0
            || INT(arena, ARENA_POINTER) == 0 || !is_true(OBJ(ring, RING_ON_CPU)) || !is_true(OBJ(arena, ARENA_ON_CPU))
            || !is_false(OBJ(arena, ARENA_ZERO_ON_CLEAR)) || !empty_list(OBJ(arena, ARENA_RETIRED))
            || steps == NULL || !PyList_Check(steps) || times == NULL || !PyList_Check(times)
            || host == NULL || !PyList_Check(host))
        return 0;
    return same_arrangement(OBJ(ring, RING_KEY), partials);
}

/* The row of seal_row, its scalars' (column, value) pairs made: the checks again (reading the scalars may have run
 * Python code), then the row. Nothing here runs Python code before the row is made; then Arena.unaim may (once a
 * ring is full). fresh: the recorder's next (empty) list of partials. */
static int commit_row(PyObject *self, PyObject *step_number, PyObject *time, PyObject *values, PyObject *fresh) {
    const int same = sealable(self);
    if (!same) return 0;
    /* strong references: an allocation below may collect garbage, whose finalizers may run Python code */
    PyObject *ring = Py_NewRef(OBJ(self, RECORDER_RING)), *stage = Py_NewRef(OBJ(self, RECORDER_STAGE)),
             *arena = Py_NewRef(OBJ(self, RECORDER_ARENA)), *partials = Py_NewRef(OBJ(self, RECORDER_PARTIALS));
    PyObject *steps = OBJ(stage, STAGE_STEPS), *times = OBJ(stage, STAGE_TIMES), *host = OBJ(stage, STAGE_HOST_ROWS);
    const long long filled = INT(ring, RING_FILLED), capacity = INT(ring, RING_CAPACITY), width = INT(ring, RING_WIDTH),
                    row = INT(stage, STAGE_ROWS);
    int r = -1, appended = 0;  /* no memory: the lists as they were */
    if (PyList_Append(steps, step_number) < 0 || (++appended, PyList_Append(times, time) < 0)
            || (++appended, PyList_Append(host, values) < 0)) {
        if (appended > 0) drop_last(steps);
        if (appended > 1) drop_last(times);
        goto done;
    }
    /* the row: its partials were written in place where the arena was aimed at the ring's next row, else copied */
    INT(stage, STAGE_ROWS) = row + 1;
    if (!filled) INT(ring, RING_FIRST_ROW) = row;
    const uintptr_t address = (uintptr_t)INT(ring, RING_POINTER) + 8u * (uintptr_t)(width * filled);
    if ((uintptr_t)INT(arena, ARENA_POINTER) != address)
        memmove((void *)address, (const void *)(uintptr_t)INT(arena, ARENA_POINTER), 8u * (size_t)width);
    INT(ring, RING_FILLED) = filled + 1;
    INT(arena, ARENA_USED) = 0;
    Py_SETREF(OBJ(self, RECORDER_PARTIALS), Py_NewRef(fresh));
    INT(self, RECORDER_GENERATION) += 1;  /* the step's gradient hooks go quiet (there are none with lanes) */
    const int full = row + 1 >= INT(stage, STAGE_CAPACITY) || filled + 1 >= capacity
                     || INT(stage, STAGE_DEFERRED_BYTES) >= INT(self, RECORDER_FLUSH_BYTES);
    if (same == 2) {  /* the key becomes this step's pairs, which the lanes write again: compared by identity next */
        PyObject *key = PyList_AsTuple(partials);
        if (key != NULL) Py_XSETREF(OBJ(ring, RING_KEY), key);
        else PyErr_Clear();
    }
    if (filled + 1 < capacity && INT(ring, RING_BUFFERS) > 1 && OBJ(ring, RING_ROWS) != NULL) {
        /* aimed at the ring's next row, as PartialRing.aim does */
        Py_XSETREF(OBJ(arena, ARENA_BASE), Py_NewRef(OBJ(ring, RING_ROWS)));
        Py_XSETREF(OBJ(arena, ARENA_BUFFER), Py_NewRef(Py_None));
        INT(arena, ARENA_POINTER) = (long long)(address + 8u * (uintptr_t)width);
        INT(arena, ARENA_SIZE) = width;
        Py_XSETREF(OBJ(arena, ARENA_AIMED), Py_NewRef(Py_True));
    } else {
        PyObject *done = PyObject_CallMethodNoArgs(arena, s_unaim);
        if (done == NULL) goto done;
        Py_DECREF(done);
    }
    r = full ? 2 : 1;
done:
    Py_DECREF(ring);
    Py_DECREF(stage);
    Py_DECREF(arena);
    Py_DECREF(partials);
    return r;
}

/* RecorderCore.seal (see Recorder): 0 declined, 1 sealed, 2 sealed and a flush is due; -1 an error (set), after
 * which the row may be half made (as after an error in the general path). The scalars: names (a tuple) and values.
 * The state is checked first, then the scalars are read (a tensor's value: reading it may run Python code, a
 * TorchFunctionMode's, which may change anything), then the state is checked again and the row made. */
static int seal_row(PyObject *self, long long step, double elapsed, PyObject *names, PyObject *const *scalars,
                    Py_ssize_t n) {
    if (!sealable(self)) return 0;
    PyObject *index = Py_XNewRef(OBJ(OBJ(self, RECORDER_STAGE), STAGE_SCALAR_INDEX)), *values = NULL;
    int r = index != NULL && PyDict_Check(index) ? scalar_row(names, scalars, n, index, &values) : 0;
    Py_XDECREF(index);
    if (r < 1) return r;
    PyObject *fresh = PyList_New(0), *step_number = PyLong_FromLongLong(step), *time = PyFloat_FromDouble(elapsed);
    r = fresh == NULL || step_number == NULL || time == NULL ? -1 : commit_row(self, step_number, time, values, fresh);
    Py_XDECREF(fresh);
    Py_XDECREF(step_number);
    Py_XDECREF(time);
    Py_DECREF(values);
    return r;
}

static PyObject *recorder_seal(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyLong_Check(args[0]) || !PyFloat_Check(args[1]) || !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "seal(step: int, elapsed: float, scalars: dict)");
        return NULL;
    }
    long long step = PyLong_AsLongLong(args[0]);
    if (step == -1 && PyErr_Occurred()) return NULL;
    PyObject *names = PyDict_Keys(args[2]), *values = names == NULL ? NULL : PyDict_Values(args[2]);
    PyObject *keys = names == NULL ? NULL : PyList_AsTuple(names);
    int r = keys == NULL || values == NULL ? -1
            : seal_row(self, step, PyFloat_AS_DOUBLE(args[1]), keys, PySequence_Fast_ITEMS(values),
                       PyList_GET_SIZE(values));
    Py_XDECREF(names);
    Py_XDECREF(values);
    Py_XDECREF(keys);
    return r < 0 ? NULL : PyLong_FromLong(r);
}

static PyMethodDef recorder_methods[] = {
    CORE_COPY_METHODS,
    {"seal", (PyCFunction)(void (*)(void))recorder_seal, METH_FASTCALL,
     "seal(step, elapsed, scalars) -> 0 declined (nothing changed), 1 sealed, 2 sealed and a flush is due."},
    {NULL, NULL, 0, NULL},
};


/* Probe.step, in C for the common case (see Probe): a recorded step that seal ends (every step recorded, no
 * histograms), or an unrecorded step followed by another; then the call counts of the engine are cleared, the step
 * is counted, and Probe._finish_step(flush) runs only when the writer thread has failed or a flush is due. Every
 * other call, before anything changed, is Probe._step_general's, with the same arguments (Probe._step_declined's
 * when seal declined the step: the general path without trying seal again). */
static PyObject *s_step_general, *s_step_declined, *s_finish_step, *s_fail, *s_error, *s_perf_counter, *time_module;

/* time.perf_counter(), the clock of Probe._started, looked up at each call as the Python step looks it up (a test
 * may stand in for it). */
static int now(double *out) {
    PyObject *t = PyObject_CallMethodNoArgs(time_module, s_perf_counter);
    if (t == NULL) return -1;
    *out = PyFloat_AsDouble(t);
    Py_DECREF(t);
    return *out == -1.0 && PyErr_Occurred() ? -1 : 0;
}

/* The error just raised, given to Probe._fail as the Python step gives it an Exception (the profiler never
 * crashes training); any other (KeyboardInterrupt) goes on. */
static PyObject *fail(PyObject *self) {
    if (!PyErr_ExceptionMatches(PyExc_Exception)) return NULL;
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL) PyException_SetTraceback(value, traceback);
    PyObject *done = PyObject_CallMethodOneArg(self, s_fail, value);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
    return done;
}

/* After the step is counted: Probe._finish_step(flush) when the writer failed or a flush is due (flush, or
 * flush_seconds since the last flush at t, the step's time), else nothing. */
static PyObject *finish(PyObject *self, int flush, double t) {
    PyObject *writer = Py_XNewRef(OBJ(self, PROBE_WRITER)), *recorder;
    int call = flush;
    if (!call && writer != NULL && writer != Py_None) {
        PyObject *error = PyObject_GetAttr(writer, s_error);
        if (error == NULL) PyErr_Clear();
        call = error != Py_None;
        Py_XDECREF(error);
    }
    Py_XDECREF(writer);
    recorder = OBJ(self, PROBE_RECORDER);
    if (!call && recorder != NULL && PyObject_TypeCheck(recorder, &RecorderCoreType)
            && OBJ(recorder, RECORDER_STAGE) != NULL && OBJ(recorder, RECORDER_STAGE) != Py_None)
        call = t - ((Core *)self)->d[PROBE_LAST_FLUSH] >= ((Core *)self)->d[PROBE_FLUSH_SECONDS];
    if (!call) Py_RETURN_NONE;
    return PyObject_CallMethodOneArg(self, s_finish_step, flush ? Py_True : Py_False);
}

/* Memory that ending a step of lanes touches, asked for before the scalars are read (reading a tensor's value costs
 * microseconds of PyTorch's own code): a step that left the caches cold then waits for these cache misses side by
 * side instead of one after another (~100 ns each). Nothing is read through an object that is not known to be of
 * its type; a prefetch of an address never faults. */
#define WARM(p) __builtin_prefetch((const void *)(p), 1, 3)

static void warm_core(PyObject *o, PyTypeObject *type) {
    if (o != NULL && Py_TYPE(o) != NULL && PyObject_TypeCheck(o, type))
        for (size_t k = 0; k < sizeof(Core); k += 64) WARM((const char *)o + k);
}

static void warm_list(PyObject *o) {
    if (o != NULL && PyList_CheckExact(o)) {
        WARM(o);
        WARM(((PyListObject *)o)->ob_item);
        WARM(((PyListObject *)o)->ob_item + PyList_GET_SIZE(o));  /* where an append writes */
    }
}

static void warm_step(PyObject *recorder, PyObject *calls, PyObject *writer) {
    if (writer != NULL) WARM(writer);
    PyObject *ring = OBJ(recorder, RECORDER_RING), *stage = OBJ(recorder, RECORDER_STAGE),
             *partials = OBJ(recorder, RECORDER_PARTIALS);
    warm_core(ring, &RingCoreType);
    warm_core(stage, &StageCoreType);
    warm_core(OBJ(recorder, RECORDER_ARENA), &ArenaCoreType);
    warm_list(partials);
    Py_ssize_t position = 0;  /* the keys the call counts' clear releases */
    PyObject *key, *value;
    while (PyDict_Next(calls, &position, &key, &value)) WARM(key);
    if (ring != NULL && PyObject_TypeCheck(ring, &RingCoreType) && OBJ(ring, RING_KEY) != NULL
            && PyTuple_CheckExact(OBJ(ring, RING_KEY)))
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(OBJ(ring, RING_KEY)); k += 8)
            WARM(&PyTuple_GET_ITEM(OBJ(ring, RING_KEY), k));
    if (partials != NULL && PyList_CheckExact(partials))
        for (Py_ssize_t k = 8; k < PyList_GET_SIZE(partials); k += 8) WARM(((PyListObject *)partials)->ob_item + k);
    if (stage != NULL && PyObject_TypeCheck(stage, &StageCoreType)) {
        warm_list(OBJ(stage, STAGE_STEPS));
        warm_list(OBJ(stage, STAGE_TIMES));
        warm_list(OBJ(stage, STAGE_HOST_ROWS));
    }
}

static PyObject *probe_step(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *recorder = OBJ(self, PROBE_RECORDER), *calls = OBJ(self, PROBE_CALLS), *general = s_step_general;
    const long long step = INT(self, PROBE_STEP), every = INT(self, PROBE_EVERY);
    if (nargs == 0 && every > 0 && step >= 0 && OBJ(self, PROBE_ERROR) == Py_None && is_false(OBJ(self, PROBE_CLOSED))
            && is_false(OBJ(self, PROBE_FORKED)) && recorder != NULL && PyObject_TypeCheck(recorder, &RecorderCoreType)
            && calls != NULL && PyDict_CheckExact(calls)) {
        if (step % every == 0 && every == 1 && INT(self, PROBE_HIST_EVERY) == 0) {
            warm_step(recorder, calls, OBJ(self, PROBE_WRITER));
            double t;
            if (now(&t) < 0) return fail(self);
            Py_ssize_t n = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
            Py_INCREF(recorder);  /* reading a scalar may run Python code: the fields are read again after seal_row */
            int r = seal_row(recorder, step, t - ((Core *)self)->d[PROBE_STARTED], kwnames, args, n);
            Py_DECREF(recorder);
            if (r < 0) return fail(self);
            if (r > 0) {
                calls = OBJ(self, PROBE_CALLS);
                if (calls != NULL && PyDict_Check(calls)) PyDict_Clear(calls);  /* the engine's new_step */
                INT(self, PROBE_STEP) += 1;
                return finish(self, r == 2, t);
            }
            general = s_step_declined;  /* the general path, without trying seal (and reading the scalars) again */
        } else if (step % every != 0 && (step + 1) % every != 0) {  /* nothing changes but the time */
            double t;
            if (now(&t) < 0) return fail(self);
            INT(self, PROBE_STEP) += 1;
            return finish(self, 0, t);
        }
    }
    PyObject *method = PyObject_GetAttr(self, general);
    if (method == NULL) return NULL;
    PyObject *result = PyObject_Vectorcall(method, args, (size_t)nargs, kwnames);
    Py_DECREF(method);
    return result;
}

static PyMethodDef probe_methods[] = {
    CORE_COPY_METHODS,
    {"step", (PyCFunction)(void (*)(void))probe_step, METH_FASTCALL | METH_KEYWORDS,
     "step($self, /, **scalars)\n--\n\n"
     "End one training step; keyword values (numbers or 1-element tensors) are recorded too.\n\n"
     "Device tensors are copied on their device: recording them does not synchronise."},
    {NULL, NULL, 0, NULL},
};

#define CORE_TYPE(NAME, TYPE_NAME, DOC, MEMBERS, METHODS)                                                              \
    PyTypeObject NAME = {                                                                                  \
        PyVarObject_HEAD_INIT(NULL, 0)                                                                     \
        .tp_name = "actprobe.stats._cstats." TYPE_NAME,                                                        \
        .tp_doc = DOC,                                                                                     \
        .tp_basicsize = sizeof(Core),                                                                      \
        .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,                         \
        .tp_new = PyType_GenericNew,                                                                       \
        .tp_traverse = (traverseproc)core_traverse,                                                        \
        .tp_clear = (inquiry)core_clear,                                                                   \
        .tp_dealloc = (destructor)core_dealloc,                                                            \
        .tp_members = MEMBERS,                                                                             \
        .tp_methods = METHODS,                                                                             \
    };

CORE_TYPE(ArenaCoreType, "ArenaCore", "The fields of an Arena that the C hooks and seal use.", arena_members, core_methods)
CORE_TYPE(RingCoreType, "RingCore", "The fields of a PartialRing that seal uses.", ring_members, core_methods)
CORE_TYPE(StageCoreType, "StageCore", "The fields of a RowStage that seal uses.", stage_members, core_methods)
CORE_TYPE(RecorderCoreType, "RecorderCore", "The fields of a Recorder that the C hooks and seal use, and seal.", recorder_members,
          recorder_methods)
CORE_TYPE(ProbeCoreType, "ProbeCore", "The fields of a Probe that its step uses, and step.", probe_members, probe_methods)

int add_state_types(PyObject *m) {
    s_item = PyUnicode_InternFromString("item");
    s_unaim = PyUnicode_InternFromString("unaim");
    s_step_general = PyUnicode_InternFromString("_step_general");
    s_step_declined = PyUnicode_InternFromString("_step_declined");
    s_perf_counter = PyUnicode_InternFromString("perf_counter");
    s_finish_step = PyUnicode_InternFromString("_finish_step");
    s_fail = PyUnicode_InternFromString("_fail");
    s_error = PyUnicode_InternFromString("error");
    if (!s_item || !s_unaim || !s_step_general || !s_step_declined || !s_perf_counter
            || !s_finish_step || !s_fail || !s_error) return -1;
    if ((time_module = PyImport_ImportModule("time")) == NULL) return -1;
    PyTypeObject *types[] = {&ArenaCoreType, &RingCoreType, &StageCoreType, &RecorderCoreType, &ProbeCoreType};
    const char *names[] = {"ArenaCore", "RingCore", "StageCore", "RecorderCore", "ProbeCore"};
    for (int k = 0; k < 5; k++)
        if (PyType_Ready(types[k]) < 0 || PyModule_AddObjectRef(m, names[k], (PyObject *)types[k]) < 0) return -1;
    return 0;
}
