/*
 * Processes and the lane-ordered gradient sum (include/ompcnn/dist.h). Without OMPCNN_MPI, or
 * when the trainer was not started by an MPI launcher, there is one process and nothing here
 * communicates.
 */
#include "ompcnn/dist.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef OMPCNN_MPI
#include <mpi.h>
#endif

/* Segment q of R contiguous segments of n items: [seg_begin(q), seg_begin(q + 1)). */
static size_t seg_begin(size_t n, int q, int parts) {
    return n * (size_t)q / (size_t)parts;
}

void dist_lanes(const dist *d, int n_lanes, int *first, int *last) {
    *first = (int)((long)d->rank * n_lanes / d->size);
    *last = (int)((long)(d->rank + 1) * n_lanes / d->size);
}

int dist_built_with_mpi(void) {
#ifdef OMPCNN_MPI
    return 1;
#else
    return 0;
#endif
}

/* The value of the first of these environment variables that is set, or -1. */
static long env_number(const char *const *vars, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const char *v = getenv(vars[i]);
        if (v) return strtol(v, NULL, 10);
    }
    return -1;
}

/* What a launcher (Open MPI's mpirun, or a PMI launcher such as MPICH's hydra or Slurm's srun)
 * told this process: its rank and the number of processes; both -1 when none started it. */
static void launcher(long *rank, long *size) {
    static const char *const sizes[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE",
                                        "MPI_LOCALNRANKS"};
    static const char *const ranks[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"};
    *size = env_number(sizes, sizeof sizes / sizeof *sizes);
    *rank = env_number(ranks, sizeof ranks / sizeof *ranks);
    if (*size < 0 && *rank >= 0) *size = 1; /* a rank without a size: some launcher */
}

int dist_init(dist *d, int *argc, char ***argv, errbuf *err) {
    memset(d, 0, sizeof *d);
    d->size = d->local_size = 1;
    long rank, size;
    launcher(&rank, &size);
#ifdef OMPCNN_MPI
    if (size < 0) return 0; /* not started by a launcher: alone, without MPI */
    int provided;
    /* Only the main thread calls MPI, between OpenMP regions. */
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return errorf(err, "MPI_Init_thread failed");
    d->mpi = 1;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->size);
    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &local);
    MPI_Comm_size(local, &d->local_size);
    MPI_Comm_free(&local);
    d->counts = malloc(4 * (size_t)d->size * sizeof *d->counts);
    if (!d->counts) return oomf(err, "out of memory");
    if (provided < MPI_THREAD_FUNNELED)
        return errorf(err, "this MPI library offers no thread support (MPI_THREAD_FUNNELED)");
#else
    (void)argc;
    (void)argv;
    /* Started as one of several processes, but unable to talk to the others: each would train
     * its own copy. Say so once (process 0) and let every process stop. */
    if (size > 1) {
        d->rank = rank > 0 ? (int)rank : 0;
        return errorf(err, "started as one of %ld processes, but this trainer was built without "
                      "MPI, so each would train alone; build with tools/setup.sh --mpi (or "
                      "-DOMPCNN_MPI=ON), or run without mpirun", size);
    }
#endif
    return 0;
}

void dist_finalize(dist *d) {
    free(d->send);
    free(d->recv);
    free(d->counts);
#ifdef OMPCNN_MPI
    if (d->mpi) MPI_Finalize();
#endif
    memset(d, 0, sizeof *d);
    d->size = d->local_size = 1;
}

void dist_abort(const dist *d, int code) {
    fflush(stdout);
    fflush(stderr);
#ifdef OMPCNN_MPI
    if (d->mpi) MPI_Abort(MPI_COMM_WORLD, code);
#else
    (void)d;
#endif
    exit(code);
}

int dist_agree(const dist *d, int status, int *who) {
    *who = status ? d->rank : -1;
    if (d->size == 1) return status;
#ifdef OMPCNN_MPI
    int *all = malloc((size_t)d->size * sizeof *all);
    if (!all) dist_abort(d, EXIT_RUNTIME);
    MPI_Allgather(&status, 1, MPI_INT, all, 1, MPI_INT, MPI_COMM_WORLD);
    *who = -1;
    for (int r = 0; r < d->size; r++)
        if (all[r]) {
            *who = r;
            status = all[r];
            break;
        }
    free(all);
#endif
    return status;
}

int dist_any(const dist *d, int flag) {
    flag = flag != 0;
#ifdef OMPCNN_MPI
    if (d->size > 1) MPI_Allreduce(MPI_IN_PLACE, &flag, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
#else
    (void)d;
#endif
    return flag;
}

int dist_reserve(dist *d, int max_local, int n_lanes, size_t n_params, errbuf *err) {
    if (d->size == 1) return 0;
    size_t seg_max = seg_begin(n_params, 1, d->size) + 1;
    size_t send = (size_t)max_local * n_params, recv = (size_t)n_lanes * seg_max;
    if (send > INT_MAX || recv > INT_MAX || n_params > INT_MAX)
        return errorf(err, "%zu parameters x %d lanes is too many for one MPI message", n_params,
                      n_lanes);
    d->send = malloc((send ? send : 1) * sizeof *d->send);
    d->recv = malloc((recv ? recv : 1) * sizeof *d->recv);
    if (!d->send || !d->recv) return oomf(err, "out of memory");
    return 0;
}

void dist_sum_lanes(dist *d, const float *grads, int n_lanes, size_t n_params, float *sum) {
#ifdef OMPCNN_MPI
    {
        const int R = d->size, me = d->rank;
        int first, last;
        dist_lanes(d, n_lanes, &first, &last);
        const size_t mine = (size_t)(last - first);
        int *send_counts = d->counts, *send_displs = send_counts + R;
        int *recv_counts = send_displs + R, *recv_displs = recv_counts + R;
        /* The send buffer holds, for each process q in turn, segment q of each of our lanes. */
        size_t off = 0;
        for (int q = 0; q < R; q++) {
            size_t b = seg_begin(n_params, q, R), len = seg_begin(n_params, q + 1, R) - b;
            send_counts[q] = (int)(mine * len);
            send_displs[q] = (int)off;
            for (size_t l = 0; l < mine; l++, off += len)
                memcpy(d->send + off, grads + l * n_params + b, len * sizeof *grads);
        }
        /* We receive our segment of every lane, in lane order (process order is lane order). */
        const size_t b = seg_begin(n_params, me, R), len = seg_begin(n_params, me + 1, R) - b;
        for (int r = 0; r < R; r++) {
            int f = (int)((long)r * n_lanes / R), l = (int)((long)(r + 1) * n_lanes / R);
            recv_counts[r] = (int)((size_t)(l - f) * len);
            recv_displs[r] = (int)((size_t)f * len);
        }
        MPI_Alltoallv(d->send, send_counts, send_displs, MPI_FLOAT, d->recv, recv_counts,
                      recv_displs, MPI_FLOAT, MPI_COMM_WORLD);
        /* The lane-order sum of our segment, exactly as one process adds its lanes. */
        float *out = sum + b;
        const float *recv = d->recv;
        for (size_t i = 0; i < len; i++) {
            float g = recv[i];
            for (int l = 1; l < n_lanes; l++) g += recv[(size_t)l * len + i];
            out[i] = g;
        }
        for (int q = 0; q < R; q++) {
            size_t qb = seg_begin(n_params, q, R);
            recv_counts[q] = (int)(seg_begin(n_params, q + 1, R) - qb);
            recv_displs[q] = (int)qb;
        }
        MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, sum, recv_counts, recv_displs,
                       MPI_FLOAT, MPI_COMM_WORLD);
    }
#else
    (void)d;
    (void)grads;
    (void)n_lanes;
    (void)n_params;
    (void)sum;
#endif
}

void dist_sum_lane_doubles(const dist *d, const double *lanes, int n_lanes, size_t width,
                           double *total) {
#ifdef OMPCNN_MPI
    if (d->size > 1) {
        const int R = d->size;
        if ((size_t)n_lanes * width > INT_MAX) dist_abort(d, EXIT_RUNTIME);
        double *all = malloc((size_t)n_lanes * width * sizeof *all);
        if (!all) {
            fprintf(stderr, "trainer: out of memory for the batch statistics\n");
            dist_abort(d, EXIT_RUNTIME);
        }
        int *counts = d->counts, *displs = counts + R;
        for (int r = 0; r < R; r++) {
            const int f = (int)((long)r * n_lanes / R), l = (int)((long)(r + 1) * n_lanes / R);
            counts[r] = (int)((size_t)(l - f) * width);
            displs[r] = (int)((size_t)f * width);
        }
        MPI_Allgatherv(lanes, counts[d->rank], MPI_DOUBLE, all, counts, displs, MPI_DOUBLE,
                       MPI_COMM_WORLD);
        sum_rows_in_order(all, n_lanes, width, total);
        free(all);
        return;
    }
#endif
    /* One process: its lanes are all of them. */
    (void)d;
    sum_rows_in_order(lanes, n_lanes, width, total);
}

void dist_gather_results(const dist *d, const int *begin, float *loss, unsigned char *hit) {
#ifdef OMPCNN_MPI
    if (d->size > 1) {
        const int R = d->size;
        int *counts = d->counts, *displs = counts + R;
        for (int r = 0; r < R; r++) {
            counts[r] = begin[r + 1] - begin[r];
            displs[r] = begin[r];
        }
        MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, loss, counts, displs, MPI_FLOAT,
                       MPI_COMM_WORLD);
        MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, hit, counts, displs,
                       MPI_UNSIGNED_CHAR, MPI_COMM_WORLD);
    }
#else
    (void)d;
    (void)begin;
    (void)loss;
    (void)hit;
#endif
}
