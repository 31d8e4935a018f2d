/* lib/onnx_export.h -- a trained model as an ONNX model (protobuf bytes) that computes what
 * model_predict() returns, for ONNX Runtime and every other ONNX consumer.
 *
 * The graph takes input "x" ([N, inputs], N symbolic) and gives "outputs" shaped like
 * model_predict()'s outputs ([N] when per_row_scalar, else [N, n_out]) and, for classifiers,
 * "classes" (int64 [N]). Each kind is written with the operations libneuron itself performs:
 * a dense layer is a Gemm on W[:,1:] with the bias column W[:,0] as its C input; sigmoid is
 * built from Exp, Div and Where exactly as ops.c computes it (ONNX Runtime's own Sigmoid loses
 * every digit of sigmoid(z) for very negative z in double); ovo's majority vote gathers each
 * class's k-1 pair decisions, counts the pairs it won and takes the ArgMax (ties to the lower
 * class). A graph
 * model is exported when every op between "x" and its prediction node has an ONNX counterpart.
 *
 *     onnx_export_opts_t o = {.dtype = ONNX_DTYPE_FLOAT64, .producer_version = "0.1.0",
 *                             .step = 12, .spec_json = "{\"kind\":\"logistic\",...}"};
 *     uint8_t *bytes = NULL;
 *     size_t len = 0;
 *     if (onnx_export(m, &o, &bytes, &len, &err) < 0) return err.code;  // err.field "format"
 *     fwrite(bytes, 1, len, f);
 *     free(bytes);
 *
 * This module is the only one that includes protobuf-c's generated ONNX schema; it is built
 * into its own library (neuron_onnx) so the math modules keep needing nothing but libc and CBLAS.
 */
#ifndef ND_ONNX_EXPORT_H
#define ND_ONNX_EXPORT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "model.h"

#define ONNX_EXPORT_OPSET 13     /* the default ai.onnx opset every export declares */
#define ONNX_EXPORT_IR_VERSION 7 /* the IR version that goes with opset 13 */

/* Element type of the weights, the input x and the outputs. */
enum onnx_dtype { ONNX_DTYPE_FLOAT64 = 1, ONNX_DTYPE_FLOAT32 = 2 };

typedef struct onnx_export_opts {
    int32_t dtype;                /* enum onnx_dtype */
    const char *producer_version; /* borrowed; producer_version of the model */
    int64_t step;                 /* metadata_props "neurond.step" */
    const char *spec_json;        /* borrowed; metadata_props "neurond.spec" */
} onnx_export_opts_t;

/* "float64" / "float32" -> enum onnx_dtype; 0 when unknown. */
int32_t onnx_dtype_from_name(const char *name);

/*
 * Encode m (its spec and current parameters) as an ONNX ModelProto. *out is new (free()) and
 * *len its size; both are NULL/0 on failure. A graph model with an op that has no ONNX
 * counterpart on the way from "x" to its prediction, or whose prediction has no fixed number of
 * values per row, is ERR_INVAL with field "format" and a message naming the node and op.
 * Reads the model only (its graph is not evaluated).
 */
int onnx_export(model_t *m, const onnx_export_opts_t *opts, uint8_t **out, size_t *len,
                err_t *err);

#endif /* ND_ONNX_EXPORT_H */
