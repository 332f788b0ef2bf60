/* The recording state the C hooks and the C end of a step read as fields (_cstate.c): the bases of Arena,
 * PartialRing, RowStage, Recorder and Probe. Each is a Core with its own names for the slots below; Python sees them as
 * ordinary attributes of the subclass. */
#ifndef ACTPROBE_CSTATE_H
#define ACTPROBE_CSTATE_H

#include <Python.h>

#define CORE_INTS 6
#define CORE_DOUBLES 3
#define CORE_OBJECTS 10

typedef struct {
    PyObject_HEAD
    long long i[CORE_INTS];
    double d[CORE_DOUBLES];
    PyObject *o[CORE_OBJECTS];  /* NULL until set: reading it raises AttributeError */
} Core;

/* Arena */
enum { ARENA_USED, ARENA_SIZE, ARENA_POINTER };
enum { ARENA_AIMED, ARENA_ZERO_ON_CLEAR, ARENA_ON_CPU, ARENA_BASE, ARENA_BUFFER, ARENA_RETIRED };
/* PartialRing */
enum { RING_FILLED, RING_CAPACITY, RING_FIRST_ROW, RING_POINTER, RING_WIDTH, RING_BUFFERS };
enum { RING_KEY, RING_ROWS, RING_ON_CPU };
/* RowStage */
enum { STAGE_ROWS, STAGE_CAPACITY, STAGE_DEFERRED_BYTES };
enum { STAGE_SCALAR_INDEX, STAGE_STEPS, STAGE_TIMES, STAGE_HOST_ROWS };
/* Recorder */
enum { RECORDER_GENERATION, RECORDER_FLUSH_BYTES };
enum { RECORDER_LANES_POSSIBLE, RECORDER_HIST_NOW, RECORDER_NEWS, RECORDER_RING, RECORDER_STAGE, RECORDER_ARENA,
       RECORDER_PARTIALS, RECORDER_PARAM_PARTIALS, RECORDER_LEAF_HOOKS, RECORDER_LANES };

/* Probe */
enum { PROBE_STEP, PROBE_EVERY, PROBE_HIST_EVERY };
enum { PROBE_STARTED, PROBE_LAST_FLUSH, PROBE_FLUSH_SECONDS };
enum { PROBE_RECORDER, PROBE_ERROR, PROBE_CLOSED, PROBE_FORKED, PROBE_CALLS, PROBE_WRITER };

extern PyTypeObject ArenaCoreType, RingCoreType, StageCoreType, RecorderCoreType, ProbeCoreType;

/* torch.Tensor, set by set_lane_types, and the interned "is_cpu" (_cstats.c) */
extern PyObject *lane_tensor_type, *s_is_cpu;

/* Makes the five types ready and adds them to module m: 0, or -1 with an error set. */
int add_state_types(PyObject *m);

#endif
