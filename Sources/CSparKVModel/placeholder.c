#include "sparkv_model.h"
