/*
 * The parallelism profile (profile.h). Only the thread that opens regions (the trainer's main
 * thread) updates the totals, between regions, so no locking is needed.
 */
#include "profile.h"

#include <string.h>
#include <time.h>

#include <omp.h>

int profile_on;

static int phase = PROFILE_NONE;
static double last_exit, wall_start;
static profile_phase totals[PROFILE_PHASES];

/* The regions of each site (a loop body), per phase. */
#define PROFILE_SITES 48
typedef struct site_totals {
    const char *name;
    long regions;
    double work, span;
} site_totals;
static site_totals sites[PROFILE_PHASES][PROFILE_SITES];

static double layer_seconds[PROFILE_MAX_LAYERS + 1][PROFILE_PARTS];
static long layer_calls[PROFILE_MAX_LAYERS + 1][PROFILE_PARTS];

void profile_layer_add(int layer, int part, double seconds) {
    if (phase != PROFILE_TRAIN) return;
    if (part == PROFILE_STEP) layer = PROFILE_MAX_LAYERS;
    if (layer < 0 || layer > PROFILE_MAX_LAYERS) return;
#pragma omp atomic
    layer_seconds[layer][part] += seconds;
#pragma omp atomic
    layer_calls[layer][part]++;
}

/* The thread's own layer when it runs a lane's pass, else the one the main thread set. */
static _Thread_local int thread_layer = -1;
static int process_layer = -1;

void profile_set_layer(int layer) {
    thread_layer = layer;
    if (!omp_in_parallel()) process_layer = layer;
}

void profile_input_grad(double seconds) {
    profile_layer_add(thread_layer >= 0 ? thread_layer : process_layer, PROFILE_INPUT_GRAD,
                      seconds);
}

double profile_layer_seconds(int layer, int part, long *calls) {
    if (part == PROFILE_STEP) layer = PROFILE_MAX_LAYERS;
    if (layer < 0 || layer > PROFILE_MAX_LAYERS) return 0.0;
    if (calls) *calls = layer_calls[layer][part];
    return layer_seconds[layer][part];
}

static site_totals *site_of(int which, const char *name) {
    for (int i = 0; i < PROFILE_SITES; i++) {
        site_totals *s = &sites[which][i];
        if (!s->name) s->name = name;
        if (s->name == name || strcmp(s->name, name) == 0) return s;
    }
    return NULL; /* more sites than places: counted in the phase only */
}

double profile_thread_cpu(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void profile_enable(void) {
    profile_on = 1;
    last_exit = profile_thread_cpu();
}

/* Closes the serial stretch since the last region (or phase change) into the current phase. */
static void close_serial(double now) {
    if (phase != PROFILE_NONE) totals[phase].serial += now - last_exit;
    last_exit = now;
}

int profile_set_phase(int next) {
    const int previous = phase;
    if (!profile_on || next == phase) return previous;
    close_serial(profile_thread_cpu());
    double wall = omp_get_wtime();
    if (phase != PROFILE_NONE) totals[phase].wall += wall - wall_start;
    wall_start = wall;
    phase = next;
    return previous;
}

static double region_begin;

void profile_region_begin(void) {
    region_begin = profile_thread_cpu();
    close_serial(region_begin);
}

void profile_region_started(double cpu) {
    if (phase != PROFILE_NONE) totals[phase].launch += cpu - region_begin;
}

void profile_region_end(const double *busy, int threads, const char *site) {
    if (phase != PROFILE_NONE) {
        profile_phase *p = &totals[phase];
        double longest = 0.0;
        int counted = threads < PROFILE_MAX_THREADS ? threads : PROFILE_MAX_THREADS;
        for (int i = 0; i < counted; i++) {
            p->work += busy[i];
            if (busy[i] > longest) longest = busy[i];
        }
        p->span += longest;
        p->regions++;
        site_totals *st = site_of(phase, site);
        if (st) {
            double sum = 0.0;
            for (int i = 0; i < counted; i++) sum += busy[i];
            st->work += sum;
            st->span += longest;
            st->regions++;
        }
    }
    last_exit = profile_thread_cpu();
}

int profile_csv(char *buf, size_t size, int threads) {
    static const char *const names[PROFILE_PHASES] = {"train", "eval"};
    int used = snprintf(buf, size, "phase,site,threads,regions,serial_s,region_work_s,"
                                   "region_span_s,work_s,span_s,wall_s,speedup_bound,launch_s\n");
    for (int i = 0; i < PROFILE_PHASES && used > 0 && (size_t)used < size; i++) {
        profile_phase p = profile_get(i);
        if (p.wall == 0.0) continue;
        double work = p.serial + p.work, span = p.serial + p.span;
        used += snprintf(buf + used, size - (size_t)used,
                         "%s,all,%d,%ld,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.4f,%.6f\n", names[i],
                         threads, p.regions, p.serial, p.work, p.span, work, span, p.wall,
                         span > 0.0 ? work / span : 0.0, p.launch);
        for (int k = 0; k < PROFILE_SITES && sites[i][k].name && used > 0 && (size_t)used < size;
             k++) {
            const site_totals *st = &sites[i][k];
            used += snprintf(buf + used, size - (size_t)used,
                             "%s,%s,%d,%ld,0,%.6f,%.6f,%.6f,%.6f,,%.4f,\n", names[i], st->name,
                             threads, st->regions, st->work, st->span, st->work, st->span,
                             st->span > 0.0 ? st->work / st->span : 0.0);
        }
    }
    return used > 0 && (size_t)used < size ? used : -1;
}

profile_phase profile_get(int which) {
    profile_phase p = totals[which];
    if (which == phase) {
        p.serial += profile_thread_cpu() - last_exit;
        p.wall += omp_get_wtime() - wall_start;
    }
    return p;
}
