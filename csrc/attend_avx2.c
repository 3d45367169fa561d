#include "attend.h"
const sv_kernels sv_kernels_avx2 = {sv_score_compressed_portable, sv_score_dense_portable, sv_accumulate_v_portable};
