# Sourced by the tests/cli scripts that run mpirun (named .bash so that ctest's *.sh glob does not run it):
# Open MPI as root in a container, more ranks than cores, shared memory only (as scripts/test.sh sets for ctest).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl="${OMPI_MCA_btl:-self,vader}" OMPI_MCA_pml="${OMPI_MCA_pml:-ob1}"
