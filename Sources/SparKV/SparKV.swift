import CSparKV
