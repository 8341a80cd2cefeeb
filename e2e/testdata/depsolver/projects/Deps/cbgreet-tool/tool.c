#include <stdio.h>
#include <cbgreet.h>

int main(void)
{
	puts("cbgreet " CBGREET_VERSION);
	return 0;
}
