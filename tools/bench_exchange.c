/*
 * Times the trainer's gradient exchange (dist_sum_lanes: all-to-all, lane-order sum, all-gather)
 * against MPI_Allreduce for sizes from one float to 4M floats. Built with -DOMPCNN_MPI=ON as
 * build/bench_exchange; run it under mpirun (tools/mpi-cost-model does):
 *
 *   mpirun -np 2 build/bench_exchange [LANES_PER_PROCESS]
 *
 * Process 0 prints one line per size: floats, MPI_Allreduce microseconds, exchange
 * microseconds, and the bytes the exchange sends per process divided by its time.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#include "ompcnn/dist.h"

/* Mean seconds per call of fn over enough repetitions to take about 0.2 s, after a warm-up. */
#define TIME_IT(result, body)                                                                     \
    do {                                                                                          \
        body;                                                                                     \
        int reps = 1;                                                                             \
        for (;;) {                                                                                \
            MPI_Barrier(MPI_COMM_WORLD);                                                          \
            double t0 = MPI_Wtime();                                                              \
            for (int i_ = 0; i_ < reps; i_++) body;                                               \
            double dt = MPI_Wtime() - t0;                                                         \
            MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);             \
            if (dt > 0.2 || reps >= 1 << 20) {                                                    \
                (result) = dt / reps;                                                             \
                break;                                                                            \
            }                                                                                     \
            reps *= dt > 0.02 ? 2 : 10;                                                           \
        }                                                                                         \
    } while (0)

int main(int argc, char **argv) {
    dist d;
    errbuf err;
    if (dist_init(&d, &argc, &argv, &err) || !d.mpi) {
        fprintf(stderr, "bench_exchange: run me under mpirun (%s)\n", d.mpi ? err.msg : "no MPI");
        return 2;
    }
    const int per = argc > 1 ? atoi(argv[1]) : 1;
    if (per < 1 || per > 64) {
        if (d.rank == 0) fprintf(stderr, "bench_exchange: LANES_PER_PROCESS is 1..64\n");
        dist_finalize(&d);
        return 2;
    }
    const int R = d.size, n_lanes = per * R;
    const size_t max_floats = (size_t)1 << 22;
    if (dist_reserve(&d, per, n_lanes, max_floats, &err)) {
        fprintf(stderr, "bench_exchange: %s\n", err.msg);
        dist_abort(&d, 1);
    }
    float *grads = malloc(max_floats * per * sizeof *grads);
    float *sum = malloc(max_floats * sizeof *sum);
    if (!grads || !sum) dist_abort(&d, 1);
    for (size_t i = 0; i < max_floats * per; i++) grads[i] = (float)(i % 97) * 0.01f;
    if (d.rank == 0)
        printf("# %d processes, %d lanes each\n# floats allreduce_us exchange_us "
               "exchange_MB/s\n", R, per);
    for (size_t n = 1; n <= max_floats; n *= 4) {
        double t_allreduce, t_exchange;
        TIME_IT(t_allreduce,
                MPI_Allreduce(grads, sum, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD));
        TIME_IT(t_exchange, dist_sum_lanes(&d, grads, n_lanes, n, sum));
        /* Bytes one process sends: its lanes' segments to the others, then its sum to them. */
        double sent = 4.0 * (double)n * (R - 1) / R * (per + 1);
        if (d.rank == 0)
            printf("%zu %.2f %.2f %.1f\n", n, t_allreduce * 1e6, t_exchange * 1e6,
                   sent / t_exchange / 1e6);
    }
    free(grads);
    free(sum);
    dist_finalize(&d);
    return 0;
}
