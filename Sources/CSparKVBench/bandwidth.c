#include "sparkv_bench.h"
