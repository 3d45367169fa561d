import SparKV
print("sparkv")
