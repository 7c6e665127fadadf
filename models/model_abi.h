/* The C interface between a model (models/_kernels.pyx) and the engines (runtime workers, simulator).
 *
 * A model bound to a data set and a batch size is described by one leashed_model_t. The runtime receives
 * its address (BoundModel.abi_address) and calls loss_grad from nogil worker threads. Every call writes
 * only into `grad` and into the caller's private workspace `work`, so any number of threads may call it
 * at once on the same model, each with its own workspace of `work_floats` floats.
 */
#ifndef LEASHED_MODEL_ABI_H
#define LEASHED_MODEL_ABI_H
#include <stdint.h>

typedef struct leashed_model_s {
    /* Mean loss over the `n` rows of the bound training set listed in `rows` at parameters `theta`;
     * writes the gradient of that mean loss into `grad` (n_params floats, overwritten, not accumulated).
     * n <= batch_size. Returns the loss (may be NaN/inf if theta diverged; the caller checks). */
    double (*loss_grad)(const struct leashed_model_s *self, const float *theta, const int64_t *rows,
                        int64_t n, float *grad, float *work);
    void *ctx;              /* model-private: layout, pointers to the bound data */
    int64_t n_params;       /* length of the flat parameter vector */
    int64_t work_floats;    /* workspace floats one caller needs for a batch of batch_size rows */
    int64_t batch_size;     /* the largest n a call may pass */
    int64_t n_rows;         /* rows in the bound training set (valid row indices: 0 .. n_rows-1) */
} leashed_model_t;

#endif
