/* The user model ABI, version 1 (docs/models.md): the one C function a user's own model provides.
 *
 * leashed wraps it into a leashed_model_t (model_abi.h) and calls it from nogil worker threads, any
 * number at once. It must write only into grad, work, pred and *loss (the caller's), allocate nothing
 * that needs the GIL and never block on another call.
 *
 *   theta     n_params floats: the parameters (read only)
 *   n_params  the descriptor's parameter count
 *   X, y      the bound data: X is n_rows x n_features float32 row-major, y n_rows int32 class labels
 *             (NULL for a model whose target is "none"; X is NULL when n_features is 0)
 *   rows, n   the batch: n row indices in 0 .. n_rows-1 (1 <= n <= the batch size)
 *   grad      n_params floats: write the gradient of the mean loss over the batch (overwrite)
 *   work      the caller's workspace: work_fixed + work_per_row * n floats (the model's descriptor)
 *   pred      n int32: the predicted class of each row of the batch (accuracy); ignored for target none
 *   loss      write the mean loss over the batch here
 *
 * Return 0 on success, any other value for an error (leashed stops the run and reports the code, with
 * the descriptor's message for it). A C or Cython model hands leashed the function as a PyCapsule named
 * LEASHED_USER_CAPSULE_NAME; a numba model is an @cfunc of the same signature.
 */
#ifndef LEASHED_USER_ABI_H
#define LEASHED_USER_ABI_H
#include <stdint.h>

#define LEASHED_USER_CAPSULE_NAME "leashed_user_loss_grad_v1"

typedef int32_t (*leashed_user_loss_grad_t)(const float *theta, int64_t n_params, const float *X,
                                            const int32_t *y, int64_t n_rows, int64_t n_features,
                                            const int64_t *rows, int64_t n, float *grad, float *work,
                                            int32_t *pred, double *loss);

#endif
