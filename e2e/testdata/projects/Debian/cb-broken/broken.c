/* Does not compile on purpose: the runner must report the compiler error. */
int main(void)
{
	return undefined_symbol_for_the_test;
}
