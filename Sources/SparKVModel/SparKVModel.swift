import SparKV
