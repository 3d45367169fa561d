/* CPU kernels of the Llama forward pass used by SparKVModel (not part of the SparKV library API). */
#ifndef SPARKV_MODEL_H
#define SPARKV_MODEL_H
#endif
